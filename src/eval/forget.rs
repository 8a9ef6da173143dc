//! The `forget-tool` strategy's conversation: the model forgets parts of
//! its context itself, with the agent's `forget` tool. Which parts go and
//! when is the set's annotations (scripted: the small models here cannot
//! choose well); what stays in their place is each part's `note`. Before
//! each turn that forgets parts, the scripted model calls `forget` on them
//! and the tool answers with the notes kept, as `decache agent` does; those
//! two messages are evaluated (a cost) but not compared.
use super::set::{EvalSet, Message};

/// The kind of the inserted messages' spans (evaluated, never compared).
pub const KIND: &str = "forget";

/// `set` with the `forget` exchanges inserted at the start of every turn
/// that forgets parts.
pub fn forgetting(set: &EvalSet) -> EvalSet {
    let mut out = set.clone();
    for (ti, turn) in out.turns.iter_mut().enumerate() {
        let t = ti as u32 + 1;
        let gone: Vec<_> = set
            .turns
            .iter()
            .flat_map(|tr| tr.messages.iter().flat_map(Message::pieces))
            .filter(|p| p.decached_from == Some(t))
            .collect();
        if gone.is_empty() {
            continue;
        }
        let mut kinds: Vec<&str> = Vec::new();
        for p in &gone {
            if !kinds.contains(&p.kind.as_str()) {
                kinds.push(&p.kind);
            }
        }
        let notes: Vec<&str> = gone.iter().filter_map(|p| p.note.as_deref()).map(str::trim).collect();
        let mut args = serde_json::json!({ "parts": kinds });
        if !notes.is_empty() {
            args["note"] = notes.join(" ").into();
        }
        let call = serde_json::json!({ "name": "forget", "arguments": args });
        let parts = if gone.len() == 1 { "1 part".to_string() } else { format!("{} parts", gone.len()) };
        let mut result = format!("Forgot {parts} ({}).", kinds.join(", "));
        if !notes.is_empty() {
            result.push_str(&format!(" Your note, kept: {}", notes.join(" ")));
        }
        let msg = |role: &str, text: String| Message {
            role: role.into(),
            text: Some(text),
            kind: Some(KIND.into()),
            decached_from: None,
            note: None,
            parts: Vec::new(),
        };
        turn.messages.insert(0, msg("tool", result));
        turn.messages.insert(0, msg("assistant", format!("<tool_call>{call}</tool_call>")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SET: &str = r#"
name = "t"
[[turn]]
[[turn.message]]
role = "user"
text = "Fix it."
[[turn.message]]
role = "tool"
kind = "file-read"
text = "fn lex()"
decached_from = 2
note = "lexer.rs: tokens end at line 40."
[[turn.message]]
role = "tool"
kind = "command-output"
text = "2 passed"
decached_from = 2
[[turn]]
[[turn.message]]
role = "user"
text = "Go on."
[question]
text = "Which file?"
answer = "lexer.rs"
"#;

    #[test]
    fn a_turn_that_forgets_opens_with_the_call_and_the_notes() {
        let set = EvalSet::parse(SET).unwrap();
        let f = forgetting(&set);
        assert_eq!(f.turns[0].messages.len(), 3, "turn 1 forgets nothing");
        let m = &f.turns[1].messages;
        assert_eq!((m.len(), m[0].role.as_str(), m[1].role.as_str()), (3, "assistant", "tool"));
        let call = m[0].text.as_deref().unwrap();
        assert!(call.starts_with("<tool_call>{") && call.contains("\"name\":\"forget\""), "{call}");
        assert!(call.contains("[\"file-read\",\"command-output\"]") && call.contains("lexer.rs: tokens end"), "{call}");
        assert_eq!(
            m[1].text.as_deref().unwrap(),
            "Forgot 2 parts (file-read, command-output). Your note, kept: lexer.rs: tokens end at line 40."
        );
        assert!(m.iter().take(2).all(|m| m.kind.as_deref() == Some(KIND)));
        assert_eq!(m[2].text.as_deref(), Some("Go on."));
    }
}
