//! The `forget-tool` strategy's conversation: the model forgets parts of
//! its context itself, with the agent's `forget` tool. Which parts go and
//! when is the set's annotations (scripted: the small models here cannot
//! choose well); what stays in their place is each part's `note`. Before
//! each turn that forgets parts, the scripted model calls `forget` on them
//! and the tool answers with the notes kept, as `decache agent` does; those
//! two messages are evaluated (a cost) but not compared.
use super::set::{EvalSet, Message, Piece};

/// The kind of the inserted messages' spans (evaluated, never compared).
pub const KIND: &str = "forget";

/// `set` with the `forget` exchanges inserted at the start of every turn
/// that forgets parts (the question's turn included).
pub fn forgetting(set: &EvalSet) -> EvalSet {
    let mut out = set.clone();
    for t in 1..=set.question_turn() {
        let gone: Vec<Piece> = set
            .turns
            .iter()
            .flat_map(|tr| tr.messages.iter().flat_map(Message::pieces))
            .filter(|p| p.decached_from == Some(t))
            .collect();
        if gone.is_empty() {
            continue;
        }
        let exchange = exchange(&gone);
        match out.turns.get_mut(t as usize - 1) {
            Some(turn) => {
                turn.messages.splice(0..0, exchange);
            }
            None => out.before_question = exchange,
        }
    }
    out
}

/// The scripted model's `forget` call on `gone` and the tool's answer.
fn exchange(gone: &[Piece]) -> Vec<Message> {
    let mut kinds: Vec<&str> = Vec::new();
    for p in gone {
        if !kinds.contains(&p.kind.as_str()) {
            kinds.push(&p.kind);
        }
    }
    let notes: Vec<&str> = gone.iter().filter_map(|p| p.note.as_deref()).map(str::trim).collect();
    let note = (!notes.is_empty()).then(|| notes.join(" "));
    let mut args = serde_json::json!({ "parts": kinds });
    let parts = if gone.len() == 1 { "1 part".to_string() } else { format!("{} parts", gone.len()) };
    let mut result = format!("Forgot {parts} ({}).", kinds.join(", "));
    if let Some(n) = note {
        result.push_str(&format!(" Your note, kept: {n}"));
        args["note"] = n.into();
    }
    let call = serde_json::json!({ "name": "forget", "arguments": args });
    let msg = |role: &str, text: String| Message {
        role: role.into(),
        text: Some(text),
        kind: Some(KIND.into()),
        decached_from: None,
        note: None,
        parts: Vec::new(),
    };
    vec![msg("assistant", format!("<tool_call>{call}</tool_call>")), msg("tool", result)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::set::tests::SET;

    #[test]
    fn a_turn_that_forgets_opens_with_the_call_and_the_notes() {
        // The user's request goes at turn 2 with a note, the reminder at the
        // question's turn (3) with its own.
        let src = SET.replace("text = \"Fix it.\"", "text = \"Fix it.\"\ndecached_from = 2\nnote = \"fix lexer.rs\"");
        let f = forgetting(&EvalSet::parse(&src).unwrap());
        assert_eq!(f.turns[0].messages.len(), 2, "turn 1 forgets nothing");
        let m = &f.turns[1].messages;
        assert_eq!((m.len(), m[0].role.as_str(), m[1].role.as_str()), (3, "assistant", "tool"));
        let call = m[0].text.as_deref().unwrap();
        assert!(call.starts_with("<tool_call>{") && call.contains("\"name\":\"forget\""), "{call}");
        assert!(call.contains("[\"user\"]") && call.contains("fix lexer.rs"), "{call}");
        assert_eq!(m[1].text.as_deref().unwrap(), "Forgot 1 part (user). Your note, kept: fix lexer.rs");
        assert!(m.iter().take(2).all(|m| m.kind.as_deref() == Some(KIND)));
        let q = &f.before_question;
        assert_eq!(q.len(), 2, "the question's turn opens with its own exchange");
        assert_eq!(q[1].text.as_deref().unwrap(), "Forgot 1 part (reminder). Your note, kept: a reminder");
    }
}
