//! An eval set from a server's request log (`decache serve
//! --record-requests DIR`): the last chat request's history, in turns, with
//! the annotations its client sent (`"decache": true` from the request that
//! first carried it, `"decached_from": N` as given). Its last assistant
//! message is the reference answer to the client messages before it.
use super::set::{EvalSet, Message, Part, Question, Turn};
use serde_json::Value;
use std::path::Path;

/// A request's turn, for `decached_from` (here and in the server's
/// requests): 1 + the assistant messages it carries (a conversation's first
/// request is turn 1, each reply opens the next; parallel tool results stay
/// in one turn).
pub fn request_turn<'a>(roles: impl Iterator<Item = &'a str>) -> u32 {
    1 + roles.filter(|&r| r == "assistant").count() as u32
}

/// One piece of a logged message: text, kind, and annotations.
struct Piece {
    text: String,
    kind: &'static str,
    decache: bool,
    decached_from: Option<u32>,
}

/// A logged message, flattened to pieces.
struct Logged {
    role: String,
    pieces: Vec<Piece>,
}

/// decache's annotations on a message, part or block `o` at `at`:
/// `"decache"` (true or false) and `"decached_from"` (a turn number). An
/// error names the field and the problem.
pub fn annotations(
    o: &serde_json::Map<String, Value>,
    at: &str,
) -> Result<(bool, Option<u32>), (String, &'static str)> {
    let decache = match o.get("decache") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err((format!("{at}.decache"), "expected true or false")),
    };
    let from = match o.get("decached_from") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| (format!("{at}.decached_from"), "expected a turn number (1, 2, ...)"))?,
        ),
    };
    Ok((decache, from))
}

/// Whether annotations leave their message or part out at `turn`.
pub fn left_out(decache: bool, decached_from: Option<u32>, turn: u32) -> bool {
    decache || decached_from.is_some_and(|n| n <= turn)
}

/// A content block or part as text (Chat Completions parts and Messages blocks).
fn block_text(o: &serde_json::Map<String, Value>) -> Option<(String, &'static str)> {
    let s = |k: &str| o.get(k).and_then(Value::as_str).map(str::to_string);
    match o.get("type").and_then(Value::as_str)? {
        "text" => Some((s("text")?, "")),
        "thinking" => Some((s("thinking")?, "thinking")),
        "tool_use" => Some((
            serde_json::json!({"name": o.get("name")?, "arguments": o.get("input").cloned().unwrap_or(Value::Null)})
                .to_string(),
            "tool-call",
        )),
        "tool_result" => {
            let text = match o.get("content") {
                Some(Value::String(t)) => t.clone(),
                Some(Value::Array(a)) => {
                    a.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("\n")
                }
                _ => String::new(),
            };
            Some((text, "tool-result"))
        }
        _ => None,
    }
}

fn message(m: &Value, at: &str) -> Result<Logged, String> {
    let o = m.as_object().ok_or_else(|| format!("{at}: expected a message object"))?;
    let role = o.get("role").and_then(Value::as_str).ok_or_else(|| format!("{at}.role: missing"))?.to_string();
    let (decache, from) = annotations(o, at).map_err(|(f, m)| format!("{f}: {m}"))?;
    let default_kind = match role.as_str() {
        "system" | "developer" => "system",
        "assistant" => "assistant",
        "tool" => "tool-result",
        _ => "user",
    };
    let mut pieces = Vec::new();
    match o.get("content") {
        Some(Value::String(t)) => {
            pieces.push(Piece { text: t.clone(), kind: default_kind, decache, decached_from: from })
        }
        Some(Value::Array(parts)) => {
            for (j, p) in parts.iter().enumerate() {
                let at = format!("{at}.content[{j}]");
                let po = p.as_object().ok_or_else(|| format!("{at}: expected an object"))?;
                let (d, f) = annotations(po, &at).map_err(|(f, m)| format!("{f}: {m}"))?;
                if let Some((text, kind)) = block_text(po) {
                    let kind = if kind.is_empty() { default_kind } else { kind };
                    pieces.push(Piece { text, kind, decache: decache || d, decached_from: from.or(f) });
                }
            }
        }
        _ => {}
    }
    if let Some(calls) = o.get("tool_calls").and_then(Value::as_array) {
        for c in calls {
            pieces.push(Piece { text: c.to_string(), kind: "tool-call", decache, decached_from: from });
        }
    }
    let role = match role.as_str() {
        "developer" => "system".to_string(),
        _ => role,
    };
    Ok(Logged { role, pieces })
}

/// Read `dir`'s logged requests (`NNNNN.json`), in order.
fn logged_chats(dir: &Path) -> Result<Vec<(String, Vec<Value>)>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let src = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        let rec: Value =
            serde_json::from_str(&src).map_err(|e| format!("{}: not a logged request: {e}", f.display()))?;
        let path = rec.get("path").and_then(Value::as_str).unwrap_or_default();
        if !(path.starts_with("/v1/chat/completions") || path.starts_with("/v1/messages"))
            || path.contains("count_tokens")
        {
            continue;
        }
        let mut msgs = rec.pointer("/body/messages").and_then(Value::as_array).cloned().unwrap_or_default();
        if let Some(system) = rec.pointer("/body/system") {
            let text = match system {
                Value::String(s) => s.clone(),
                Value::Array(a) => a.iter().filter_map(|b| b.get("text").and_then(Value::as_str)).collect(),
                _ => String::new(),
            };
            msgs.insert(0, serde_json::json!({"role": "system", "content": text}));
        }
        if !msgs.is_empty() {
            out.push((f.display().to_string(), msgs));
        }
    }
    Ok(out)
}

/// The eval set a request log makes (see the module's comment).
pub fn set_from_requests(dir: &Path) -> Result<EvalSet, String> {
    let chats = logged_chats(dir)?;
    let Some((last_file, last)) = chats.last() else {
        return Err(format!(
            "{}: no logged chat request (recorded with decache serve --record-requests)",
            dir.display()
        ));
    };
    let msgs: Vec<Logged> = last
        .iter()
        .enumerate()
        .map(|(i, m)| message(m, &format!("{last_file}: messages[{i}]")))
        .collect::<Result<_, _>>()?;
    // Where `"decache": true` first appeared: the turn of the first request
    // whose message i (same role) carried it.
    let first_marked = |i: usize| -> Option<u32> {
        chats.iter().find_map(|(_, ms)| {
            let m = ms.get(i)?;
            let l = message(m, "").ok()?;
            (l.role == msgs[i].role && l.pieces.iter().any(|p| p.decache))
                .then(|| request_turn(ms.iter().filter_map(|m| m["role"].as_str())))
        })
    };
    let answer_at = msgs
        .iter()
        .rposition(|m| m.role == "assistant")
        .ok_or_else(|| format!("{last_file}: no assistant message to take as the reference answer"))?;
    let q_from = msgs[..answer_at].iter().rposition(|m| m.role == "assistant").map_or(0, |i| i + 1);
    let question: String =
        msgs[q_from..answer_at].iter().flat_map(|m| m.pieces.iter().map(|p| p.text.as_str())).collect();
    let answer: String = msgs[answer_at].pieces.iter().map(|p| p.text.as_str()).collect();
    let mut turns: Vec<Turn> = Vec::new();
    let mut turn = 1u32;
    // The question's turn: after every turn the history before it closes.
    let last_turn = 1 + msgs[..q_from].iter().filter(|m| m.role == "assistant").count() as u32;
    for (i, m) in msgs[..q_from].iter().enumerate() {
        let marked = first_marked(i);
        let parts: Vec<Part> = m
            .pieces
            .iter()
            .filter(|p| !p.text.is_empty())
            .filter_map(|p| {
                let from = p.decached_from.or(if p.decache { marked } else { None }).map(|d| d.min(last_turn));
                // Out before it was ever cached: not part of the conversation.
                if from.is_some_and(|d| d <= turn) {
                    return None;
                }
                Some(Part { text: p.text.clone(), kind: Some(p.kind.to_string()), decached_from: from, note: None })
            })
            .collect();
        if !parts.is_empty() {
            while turns.len() < turn as usize {
                turns.push(Turn { messages: Vec::new() });
            }
            let role = if m.role == "tool" { "tool" } else { m.role.as_str() };
            turns[turn as usize - 1].messages.push(Message {
                role: role.into(),
                text: None,
                kind: None,
                decached_from: None,
                note: None,
                parts,
            });
        }
        if m.role == "assistant" {
            turn += 1;
        }
    }
    let name = dir.file_name().map_or_else(|| "requests".into(), |n| n.to_string_lossy().into_owned());
    let set = EvalSet {
        name: name.clone(),
        description: format!(
            "From the request log {} ({} chat requests): the last request's history, annotated as its client sent it.",
            dir.display(),
            chats.len()
        ),
        turns,
        question: Question { text: question, answer },
        before_question: Vec::new(),
    };
    set.check().map_err(|e| format!("{}: the set it makes: {e}", dir.display()))?;
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log(dir: &Path, n: usize, path: &str, body: Value) {
        let rec = json!({"seq": n, "method": "POST", "path": path, "status": 200, "body": body});
        std::fs::write(dir.join(format!("{n:05}.json")), rec.to_string()).unwrap();
    }

    #[test]
    fn a_request_log_becomes_a_set_with_its_annotations() {
        let dir = std::env::temp_dir().join(format!("decache-reqlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sys = json!({"role": "system", "content": "You are terse."});
        let paste = json!({"role": "user", "content": "LOG: disk full on /var"});
        let r1 = json!({"role": "assistant", "content": "The disk is full."});
        let ask = json!({"role": "user", "content": [{"type": "text", "text": "Fix it. "}, {"type": "text", "text": "<reminder>", "decached_from": 3}]});
        let r2 = json!({"role": "assistant", "content": "Deleted old logs."});
        let q = json!({"role": "user", "content": "What was wrong?"});
        let a = json!({"role": "assistant", "content": "The disk was full."});
        let marked = |m: &Value| {
            let mut m = m.clone();
            m["decache"] = json!(true);
            m
        };
        log(&dir, 1, "/v1/chat/completions", json!({"messages": [sys, paste]}));
        log(&dir, 2, "/v1/chat/completions", json!({"messages": [sys, paste, r1, ask]}));
        log(&dir, 3, "/health", json!(null));
        log(&dir, 4, "/v1/chat/completions", json!({"messages": [sys, marked(&paste), r1, ask, r2, q]}));
        log(&dir, 5, "/v1/chat/completions", json!({"messages": [sys, marked(&paste), r1, ask, r2, q, a]}));
        let s = set_from_requests(&dir).unwrap();
        assert_eq!(s.turns.len(), 2, "two turns before the question");
        assert_eq!((s.question.text.as_str(), s.question.answer.as_str()), ("What was wrong?", "The disk was full."));
        let t1 = &s.turns[0].messages;
        assert_eq!(t1[1].parts[0].text, "LOG: disk full on /var");
        assert_eq!(t1[1].parts[0].decached_from, Some(3), "marked first in request 4, turn 3");
        assert_eq!(t1[0].parts[0].decached_from, None);
        let t2 = &s.turns[1].messages;
        assert_eq!(t2[0].parts[1].text, "<reminder>");
        assert_eq!(t2[0].parts[1].decached_from, Some(3));
        assert_eq!(t2[1].role, "assistant");
        // Bad logs are named.
        std::fs::write(dir.join("00006.json"), "{").unwrap();
        assert!(set_from_requests(&dir).unwrap_err().contains("00006.json"));
        std::fs::remove_file(dir.join("00006.json")).unwrap();
        log(&dir, 6, "/v1/chat/completions", json!({"messages": [{"role": "user", "content": "hi"}]}));
        assert!(set_from_requests(&dir).unwrap_err().contains("no assistant message"));
        let _ = std::fs::remove_dir_all(&dir);
        let empty = std::env::temp_dir().join(format!("decache-reqlog-empty-{}", std::process::id()));
        std::fs::create_dir_all(&empty).unwrap();
        assert!(set_from_requests(&empty).unwrap_err().contains("no logged chat request"));
        let _ = std::fs::remove_dir_all(&empty);
    }
}
