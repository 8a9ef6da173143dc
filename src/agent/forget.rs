//! The `forget` tool: the model forgets part of its own context in place (a
//! tool result by its number, every read of a file, its finished thinking),
//! with an optional note that stays (what it must remember of what goes).
//! The decache policy's rules stay the floor; this is the model choosing
//! more. Each deletion is a decache event with reason "forgotten by the
//! model".
use super::tools::{ToolError, ToolOutput};
use super::{Agent, AgentUi};
use crate::context::policy::Reason;
use crate::context::segments::SegmentKind;
use serde_json::Value;

/// What the model asked to forget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Tool results `first..=last` (numbered from 1 in the order they came).
    Results(usize, usize),
    /// Every read of this file (re-readable).
    File(String),
    /// Its reasoning blocks.
    Thinking,
}

/// The target named by a call's arguments: exactly one of `result` (a
/// number, or `[first, last]`), `path` or `thinking: true`.
pub fn target(a: &Value) -> Result<Target, ToolError> {
    let given = |k: &str| a.get(k).is_some_and(|v| !v.is_null());
    if ["result", "path", "thinking"].iter().filter(|k| given(k)).count() != 1 {
        return Err(
            "give exactly one of result (a result's number, or [first, last]), path (a file you read) or thinking (true)"
                .into(),
        );
    }
    let number = |v: &Value| v.as_u64().filter(|&n| n > 0).map(|n| n as usize);
    if let Some(r) = a.get("result").filter(|v| !v.is_null()) {
        let bad = || ToolError::from("argument result must be a result's number (1, 2, ...) or [first, last]");
        return match r {
            Value::Array(v) if v.len() == 2 => match (number(&v[0]), number(&v[1])) {
                (Some(x), Some(y)) if x <= y => Ok(Target::Results(x, y)),
                _ => Err(bad()),
            },
            v => number(v).map(|x| Target::Results(x, x)).ok_or_else(bad),
        };
    }
    if let Some(p) = a.get("path").filter(|v| !v.is_null()) {
        return p.as_str().map(|p| Target::File(p.to_string())).ok_or_else(|| "argument path must be a string".into());
    }
    match a.get("thinking") {
        Some(Value::Bool(true)) => Ok(Target::Thinking),
        _ => Err("argument thinking must be true".into()),
    }
}

/// The optional note: a non-empty string.
fn note(a: &Value) -> Result<Option<String>, ToolError> {
    match a.get("note") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Some(_) => Err("argument note must be a string".into()),
    }
}

impl Agent {
    /// Run a `forget` call on the conversation. The outer error is the
    /// engine's; the inner one goes to the model, like any tool's.
    pub(super) fn forget_call(
        &mut self,
        args: &Value,
        ui: &mut dyn AgentUi,
    ) -> crate::error::Result<Result<ToolOutput, ToolError>> {
        let (t, note) = match (target(args), note(args)) {
            (Ok(t), Ok(n)) => (t, n),
            (Err(e), _) | (_, Err(e)) => return Ok(Err(e)),
        };
        let (what, events) = match &t {
            Target::Results(a, b) => {
                let n = self.results.len();
                if *b > n {
                    return Ok(Err(format!("there is no result {b}: the results so far are numbered 1 to {n}").into()));
                }
                let ids: Vec<u64> = self.results[a - 1..*b].concat();
                let what = if a == b { format!("result {a}") } else { format!("results {a} to {b}") };
                (what, self.conv.forget_where(|s| ids.contains(&s.id), Reason::ByModel)?)
            }
            Target::File(p) => {
                let reads = |s: &crate::context::segments::Segment| matches!(&s.kind, SegmentKind::FileRead { path } if path == p);
                (format!("the reads of {p}"), self.conv.forget_where(reads, Reason::ByModel)?)
            }
            Target::Thinking => (
                "your thinking".to_string(),
                self.conv.forget_where(|s| s.kind == SegmentKind::Thinking, Reason::ByModel)?,
            ),
        };
        self.decached(&events, ui);
        if events.is_empty() {
            return Ok(Err(
                format!("{what}: nothing left to forget (forgotten already, or nothing of the kind)").into()
            ));
        }
        let cells: usize = events.iter().map(|e| e.cells).sum();
        let (text, kind) = match &note {
            Some(n) => (format!("Forgot {what} ({cells} tokens). Your note, kept: {n}"), SegmentKind::Note),
            None => (format!("Forgot {what} ({cells} tokens)."), SegmentKind::CommandOutput { passed: Some(true) }),
        };
        Ok(Ok(ToolOutput { text, kind, summary: format!("{what}: {cells} tokens"), wrote: None }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_are_read_from_the_arguments_or_refused_by_name() {
        assert_eq!(target(&json!({"result": 3})), Ok(Target::Results(3, 3)));
        assert_eq!(target(&json!({"result": [2, 5], "note": "x"})), Ok(Target::Results(2, 5)));
        assert_eq!(target(&json!({"path": "src/a.rs"})), Ok(Target::File("src/a.rs".into())));
        assert_eq!(target(&json!({"thinking": true})), Ok(Target::Thinking));
        for bad in [json!({}), json!({"result": 1, "path": "a"}), json!({"result": 0}), json!({"result": [5, 2]})] {
            assert!(target(&bad).is_err(), "{bad}");
        }
        assert!(target(&json!({"path": 7})).unwrap_err().0.contains("path must be a string"));
        assert!(note(&json!({"note": 1})).unwrap_err().0.contains("note must be a string"));
        assert_eq!(note(&json!({"note": "  "})), Ok(None));
    }
}
