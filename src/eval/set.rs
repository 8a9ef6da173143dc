//! Annotated eval sets (`prompts/eval/*.toml`, format in `docs/eval.md`):
//! a conversation in numbered turns where every part says whether it stays
//! cached and, if not, from which turn on it is decached; then a question
//! and the reference answer whose likelihood measures what was lost.
use serde::Deserialize;
use std::path::Path;

/// What a part holds (for the report; the strategies go by the annotations).
pub const KINDS: &[&str] = &[
    "system",
    "user",
    "assistant",
    "reminder",
    "file-read",
    "command-output",
    "log",
    "thinking",
    "tool-call",
    "tool-result",
];

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSet {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(rename = "turn")]
    pub turns: Vec<Turn>,
    pub question: Question,
    /// Messages the question turn opens with, before the question (not in
    /// the file: the `forget-tool` strategy's exchange, `forget.rs`).
    #[serde(skip)]
    pub before_question: Vec<Message>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    #[serde(rename = "message")]
    pub messages: Vec<Message>,
}

/// A message: either one `text` (with its own `kind` and `decached_from`)
/// or several `part`s, each annotated.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub role: String,
    pub text: Option<String>,
    pub kind: Option<String>,
    pub decached_from: Option<u32>,
    /// What the `forget-tool` strategy's scripted model keeps in place of
    /// the text when it forgets it.
    pub note: Option<String>,
    #[serde(default, rename = "part")]
    pub parts: Vec<Part>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Part {
    pub text: String,
    pub kind: Option<String>,
    pub decached_from: Option<u32>,
    pub note: Option<String>,
}

/// The last turn: a question whose answer lies in a part that stays
/// cached, and the reference answer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub text: String,
    pub answer: String,
}

/// One annotated piece of a message, as the evaluation uses it.
#[derive(Clone, Debug, PartialEq)]
pub struct Piece {
    pub text: String,
    pub kind: String,
    /// The turn from which on it is no longer cached.
    pub decached_from: Option<u32>,
    /// The note kept in its place when the model forgets it (`forget-tool`).
    pub note: Option<String>,
}

impl Message {
    /// The message's pieces; a whole-message `text` is one piece.
    pub fn pieces(&self) -> Vec<Piece> {
        let default_kind = |role: &str| match role {
            "system" | "user" | "assistant" => role.to_string(),
            _ => "tool-result".to_string(),
        };
        match &self.text {
            Some(t) => vec![Piece {
                text: t.clone(),
                kind: self.kind.clone().unwrap_or_else(|| default_kind(&self.role)),
                decached_from: self.decached_from,
                note: self.note.clone(),
            }],
            None => self
                .parts
                .iter()
                .map(|p| Piece {
                    text: p.text.clone(),
                    kind: p.kind.clone().unwrap_or_else(|| default_kind(&self.role)),
                    decached_from: p.decached_from,
                    note: p.note.clone(),
                })
                .collect(),
        }
    }

    pub fn content(&self) -> String {
        self.pieces().into_iter().map(|p| p.text).collect()
    }
}

impl EvalSet {
    /// Read and check a set; errors name the file and the place.
    pub fn load(path: &Path) -> Result<EvalSet, String> {
        let src = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        EvalSet::parse(&src).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(src: &str) -> Result<EvalSet, String> {
        let set: EvalSet = toml::from_str(src).map_err(|e| e.to_string().trim_end().to_string())?;
        set.check()?;
        Ok(set)
    }

    /// The turn the question is asked in (after the last annotated turn).
    pub fn question_turn(&self) -> u32 {
        self.turns.len() as u32 + 1
    }

    pub(crate) fn check(&self) -> Result<(), String> {
        if self.turns.is_empty() {
            return Err("the set has no [[turn]]".into());
        }
        if self.question.text.trim().is_empty() || self.question.answer.trim().is_empty() {
            return Err("[question] needs a non-empty text and answer".into());
        }
        let last = self.question_turn();
        for (ti, turn) in self.turns.iter().enumerate() {
            let t = ti as u32 + 1;
            if turn.messages.is_empty() {
                return Err(format!("turn {t} has no [[turn.message]]"));
            }
            for (mi, m) in turn.messages.iter().enumerate() {
                let at = format!("turn {t}, message {}", mi + 1);
                if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "tool") {
                    return Err(format!("{at}: role '{}' is not system, user, assistant or tool", m.role));
                }
                match (&m.text, m.parts.is_empty()) {
                    (Some(_), false) => {
                        return Err(format!("{at}: give either text or [[turn.message.part]], not both"))
                    }
                    (None, true) => return Err(format!("{at}: no text and no [[turn.message.part]]")),
                    (None, false) if m.kind.is_some() || m.decached_from.is_some() || m.note.is_some() => {
                        return Err(format!(
                            "{at}: kind, decached_from and note go on each part of a message made of parts"
                        ))
                    }
                    _ => {}
                }
                for (pi, p) in m.pieces().iter().enumerate() {
                    let at = if m.parts.is_empty() { at.clone() } else { format!("{at}, part {}", pi + 1) };
                    if p.text.is_empty() {
                        return Err(format!("{at}: empty text"));
                    }
                    if !KINDS.contains(&p.kind.as_str()) {
                        return Err(format!("{at}: kind '{}' is not one of {}", p.kind, KINDS.join(", ")));
                    }
                    match (&p.note, p.decached_from) {
                        (Some(n), Some(_)) if n.trim().is_empty() => return Err(format!("{at}: empty note")),
                        (Some(_), None) => {
                            return Err(format!(
                                "{at}: a note is what stays when the part is forgotten: it needs decached_from"
                            ))
                        }
                        _ => {}
                    }
                    if let Some(d) = p.decached_from {
                        if d <= t || d > last {
                            return Err(format!(
                                "{at}: decached_from = {d} must be a later turn than this one ({t}) and at most the question's turn ({last})"
                            ));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const SET: &str = r#"
name = "t"
[[turn]]
[[turn.message]]
role = "system"
text = "You are an agent."
[[turn.message]]
role = "user"
text = "Fix it."
[[turn]]
[[turn.message]]
role = "user"
[[turn.message.part]]
text = "<system-reminder>x</system-reminder>"
kind = "reminder"
decached_from = 3
note = "a reminder"
[[turn.message.part]]
text = "Go on."
[question]
text = "Which file?"
answer = "lexer.rs"
"#;

    #[test]
    fn a_set_parses_with_turns_parts_and_defaults() {
        let s = EvalSet::parse(SET).unwrap();
        assert_eq!(s.turns.len(), 2);
        assert_eq!(s.question_turn(), 3);
        let p = s.turns[1].messages[0].pieces();
        assert_eq!(p[0].kind, "reminder");
        assert_eq!(p[0].decached_from, Some(3));
        assert_eq!(p[0].note.as_deref(), Some("a reminder"));
        assert_eq!(p[1].note, None);
        assert_eq!(p[1].kind, "user");
        assert_eq!(p[1].decached_from, None);
        assert_eq!(s.turns[1].messages[0].content(), "<system-reminder>x</system-reminder>Go on.");
    }

    #[test]
    fn bad_sets_are_named_by_place() {
        let cases = [
            (
                SET.replace("decached_from = 3", "decached_from = 2"),
                "turn 2, message 1, part 1: decached_from = 2 must be a later turn",
            ),
            (SET.replace("decached_from = 3", "decached_from = 9"), "at most the question's turn (3)"),
            (
                SET.replace("kind = \"reminder\"", "kind = \"memo\""),
                "turn 2, message 1, part 1: kind 'memo' is not one of",
            ),
            (SET.replace("role = \"system\"", "role = \"boss\""), "turn 1, message 1: role 'boss'"),
            (SET.replace("text = \"Fix it.\"", "text = \"Fix it.\"\ncolour = 1"), "unknown field `colour`"),
            (SET.replace("answer = \"lexer.rs\"", "answer = \"\""), "[question] needs"),
            (SET.replace("note = \"a reminder\"", "note = \" \""), "turn 2, message 1, part 1: empty note"),
            (SET.replace("text = \"Go on.\"", "text = \"Go on.\"\nnote = \"n\""), "part 2: a note is what stays"),
            (
                SET.replace(
                    "role = \"system\"\ntext",
                    "role = \"system\"\ndecached_from = 2\n[[turn.message.part]]\ntext = \"a\"\n#",
                ),
                "go on each part",
            ),
            (
                SET.replace(
                    "text = \"You are an agent.\"",
                    "text = \"You are an agent.\"\n[[turn.message.part]]\ntext = \"a\"",
                ),
                "turn 1, message 1: give either text or",
            ),
        ];
        for (src, want) in cases {
            let e = EvalSet::parse(&src).unwrap_err();
            assert!(e.contains(want), "{e}\nwanted: {want}");
        }
        let e = EvalSet::parse("name = \"x\"\n[[turn]]\n[[turn.message]]\nrole = \"user\"\ntext = 'a\n").unwrap_err();
        assert!(e.contains("line"), "a TOML error names its line: {e}");
    }
}
