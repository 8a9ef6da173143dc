//! Context editing (`context_management.edits`), done here rather than
//! ignored: `clear_tool_uses_20250919` replaces the oldest tool results (and,
//! if asked, their calls' inputs) by a short note once the prompt passes its
//! trigger, keeping the last `keep` uses and the excluded tools;
//! `clear_thinking_20251015` drops the thinking of all but the last `keep`
//! assistant turns. What was cleared is remembered by tool-use id, so the
//! client's next request, which still carries its full history, renders in
//! the same cleared form and meets the cache: only its new turn is
//! prefilled, where Anthropic's API re-reads the whole prompt after an edit.
use super::super::error::ApiError;
use super::content::{bad_at, Conversation, Part, CLEARED_INPUT, CLEARED_RESULT};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

pub const CLEAR_TOOL_USES: &str = "clear_tool_uses_20250919";
pub const CLEAR_THINKING: &str = "clear_thinking_20251015";

/// When tool uses are cleared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The prompt has more tokens than this.
    InputTokens(usize),
    /// The conversation has more tool uses than this.
    ToolUses(usize),
}

/// Whose inputs are cleared with their results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inputs {
    None,
    All,
    Only(Vec<String>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClearToolUses {
    pub trigger: Trigger,
    /// The most recent tool uses that stay.
    pub keep: usize,
    /// Clear at least this many tokens, or nothing.
    pub clear_at_least: Option<usize>,
    pub exclude: Vec<String>,
    pub inputs: Inputs,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    ToolUses(ClearToolUses),
    /// Keep the thinking of this many last assistant turns (`None`: all).
    Thinking(Option<usize>),
}

/// A request's `context_management`: its edits, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Edits(pub Vec<Edit>);

fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, ApiError> {
    v.as_object().ok_or_else(|| bad_at(at, "expected an object"))
}

/// `{"type": kind, "value": N}` at `o[key]`, if present.
fn amount(o: &Map<String, Value>, key: &str, at: &str, kinds: &[&str]) -> Result<Option<(String, usize)>, ApiError> {
    let at = format!("{at}.{key}");
    let Some(v) = o.get(key).filter(|v| !v.is_null()) else { return Ok(None) };
    let v = object(v, &at)?;
    let kind = match v.get("type").and_then(Value::as_str) {
        Some(k) if kinds.contains(&k) => k.to_string(),
        Some(k) => return Err(bad_at(&format!("{at}.type"), format!("unknown type '{k}' ({})", kinds.join(" or ")))),
        None => return Err(bad_at(&format!("{at}.type"), format!("missing ({})", kinds.join(" or ")))),
    };
    let n = v
        .get("value")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad_at(&format!("{at}.value"), "expected a non-negative integer"))?;
    Ok(Some((kind, usize::try_from(n).unwrap_or(usize::MAX))))
}

fn names(v: &Value, at: &str) -> Result<Vec<String>, ApiError> {
    let a = v.as_array().ok_or_else(|| bad_at(at, "expected a list of tool names"))?;
    a.iter()
        .enumerate()
        .map(|(i, n)| n.as_str().map(str::to_string).ok_or_else(|| bad_at(&format!("{at}[{i}]"), "expected a string")))
        .collect()
}

impl Edits {
    /// `context_management` checked: every problem is a 400 naming the field.
    pub fn parse(v: Option<&Value>) -> Result<Edits, ApiError> {
        let Some(v) = v.filter(|v| !v.is_null()) else { return Ok(Edits::default()) };
        let o = object(v, "context_management")?;
        let Some(list) = o.get("edits").filter(|e| !e.is_null()) else { return Ok(Edits::default()) };
        let list = list.as_array().ok_or_else(|| bad_at("context_management.edits", "expected a list of edits"))?;
        let mut out = Vec::with_capacity(list.len());
        for (i, e) in list.iter().enumerate() {
            let at = format!("context_management.edits[{i}]");
            let e = object(e, &at)?;
            match e.get("type").and_then(Value::as_str) {
                Some(CLEAR_TOOL_USES) => {
                    let trigger = match amount(e, "trigger", &at, &["input_tokens", "tool_uses"])? {
                        Some((k, n)) if k == "tool_uses" => Trigger::ToolUses(n),
                        Some((_, n)) => Trigger::InputTokens(n),
                        None => Trigger::InputTokens(100_000),
                    };
                    let keep = amount(e, "keep", &at, &["tool_uses"])?.map_or(3, |(_, n)| n);
                    let clear_at_least = amount(e, "clear_at_least", &at, &["input_tokens"])?.map(|(_, n)| n);
                    let exclude = match e.get("exclude_tools").filter(|v| !v.is_null()) {
                        Some(v) => names(v, &format!("{at}.exclude_tools"))?,
                        None => Vec::new(),
                    };
                    let inputs = match e.get("clear_tool_inputs") {
                        None | Some(Value::Null) | Some(Value::Bool(false)) => Inputs::None,
                        Some(Value::Bool(true)) => Inputs::All,
                        Some(v @ Value::Array(_)) => Inputs::Only(names(v, &format!("{at}.clear_tool_inputs"))?),
                        Some(_) => {
                            return Err(bad_at(
                                &format!("{at}.clear_tool_inputs"),
                                "expected true, false or a list of tool names",
                            ))
                        }
                    };
                    out.push(Edit::ToolUses(ClearToolUses { trigger, keep, clear_at_least, exclude, inputs }));
                }
                Some(CLEAR_THINKING) => {
                    let keep = match e.get("keep") {
                        None | Some(Value::Null) => Some(1),
                        Some(Value::String(s)) if s == "all" => None,
                        Some(_) => amount(e, "keep", &at, &["thinking_turns"])?.map(|(_, n)| n),
                    };
                    out.push(Edit::Thinking(keep));
                }
                Some(t) => {
                    return Err(bad_at(
                        &format!("{at}.type"),
                        format!("unknown edit '{t}' ({CLEAR_TOOL_USES} or {CLEAR_THINKING})"),
                    ))
                }
                None => return Err(bad_at(&format!("{at}.type"), "missing")),
            }
        }
        Ok(Edits(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Most tool uses remembered as cleared (the oldest forgotten first).
const MEMORY: usize = 50_000;

/// The tool uses this server cleared, by id, and whether their inputs went
/// too: applied again to every later request that asks for the edit.
#[derive(Default)]
pub struct Memory {
    inner: Mutex<(HashMap<String, bool>, VecDeque<String>)>,
}

impl Memory {
    fn recall(&self, id: &str) -> Option<bool> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0.get(id).copied()
    }

    fn remember(&self, id: &str, inputs: bool) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (map, order) = &mut *g;
        if map.insert(id.to_string(), inputs).is_none() {
            order.push_back(id.to_string());
        }
        while order.len() > MEMORY {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }
}

/// How edits count tokens.
pub struct Counter<'a> {
    /// Tokens of a text.
    pub text: &'a dyn Fn(&str) -> usize,
    /// Tokens of the whole prompt the conversation renders to.
    pub prompt: &'a dyn Fn(&Conversation) -> Result<usize, ApiError>,
}

/// Where a tool use is, and its results.
struct Use {
    turn: usize,
    part: usize,
    id: String,
    name: String,
    results: Vec<(usize, usize)>,
}

fn uses(conv: &Conversation) -> Vec<Use> {
    let mut out: Vec<Use> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    for (t, turn) in conv.turns.iter().enumerate() {
        for (p, part) in turn.parts.iter().enumerate() {
            match part {
                Part::ToolUse { id, name, .. } => {
                    if !id.is_empty() {
                        by_id.insert(id.clone(), out.len());
                    }
                    out.push(Use { turn: t, part: p, id: id.clone(), name: name.clone(), results: Vec::new() });
                }
                Part::ToolResult { id, .. } => {
                    if let Some(&u) = by_id.get(id) {
                        out[u].results.push((t, p));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Tokens clearing `u` would save (its results, and its input when
/// `inputs`: a short input may grow into the note, so this may be negative).
fn gain(conv: &Conversation, u: &Use, inputs: bool, count: &Counter) -> i64 {
    let n = |t: &str| (count.text)(t) as i64;
    let mut g = 0;
    for &(t, p) in &u.results {
        if let Part::ToolResult { text, cleared: false, .. } = &conv.turns[t].parts[p] {
            g += n(text) - n(CLEARED_RESULT);
        }
    }
    if let (true, Part::ToolUse { input, cleared: false, .. }) = (inputs, &conv.turns[u.turn].parts[u.part]) {
        g += n(&crate::toolcall::spaced_json(input)) - n(CLEARED_INPUT);
    }
    g
}

fn clear(conv: &mut Conversation, u: &Use, inputs: bool) {
    for &(t, p) in &u.results {
        if let Part::ToolResult { cleared, .. } = &mut conv.turns[t].parts[p] {
            *cleared = true;
        }
    }
    if let (true, Part::ToolUse { cleared, .. }) = (inputs, &mut conv.turns[u.turn].parts[u.part]) {
        *cleared = true;
    }
}

/// Clear tool uses by `e`: first those cleared before (from `memory`), then,
/// if the prompt still passes the trigger, the oldest others but the last
/// `keep` and the excluded tools, oldest first, until `clear_at_least`
/// tokens went (or all of them; nothing when they cannot reach it).
/// New clears are remembered when `remember`. The applied edit, if any.
fn clear_tool_uses(
    conv: &mut Conversation,
    e: &ClearToolUses,
    memory: &Memory,
    remember: bool,
    count: &Counter,
) -> Result<Option<Value>, ApiError> {
    let all = uses(conv);
    let (mut n, mut tokens) = (0usize, 0i64);
    let mut done = HashSet::new();
    for (i, u) in all.iter().enumerate() {
        let remembered = if u.id.is_empty() { None } else { memory.recall(&u.id) };
        if let Some(inputs) = remembered {
            tokens += gain(conv, u, inputs, count);
            clear(conv, u, inputs);
            n += 1;
            done.insert(i);
        }
    }
    let passed = match e.trigger {
        Trigger::ToolUses(v) => all.len() > v,
        Trigger::InputTokens(v) => (count.prompt)(conv)? > v,
    };
    if passed {
        let inputs_for = |name: &str| match &e.inputs {
            Inputs::None => false,
            Inputs::All => true,
            Inputs::Only(names) => names.iter().any(|x| x == name),
        };
        let older = all.len().saturating_sub(e.keep);
        let candidates: Vec<(usize, i64)> = all[..older]
            .iter()
            .enumerate()
            .filter(|(i, u)| {
                !done.contains(i) && !u.id.is_empty() && !u.results.is_empty() && !e.exclude.contains(&u.name)
            })
            .map(|(i, u)| (i, gain(conv, u, inputs_for(&u.name), count)))
            .collect();
        let take = match e.clear_at_least {
            Some(least) => {
                let mut sum = 0;
                candidates
                    .iter()
                    .position(|&(_, g)| {
                        sum += g;
                        sum >= least as i64
                    })
                    .map_or(0, |p| p + 1)
            }
            None => candidates.len(),
        };
        for &(i, g) in &candidates[..take] {
            let u = &all[i];
            let inputs = inputs_for(&u.name);
            clear(conv, u, inputs);
            if remember {
                memory.remember(&u.id, inputs);
            }
            tokens += g;
            n += 1;
        }
    }
    Ok((n > 0).then(|| json!({"type": CLEAR_TOOL_USES, "cleared_tool_uses": n, "cleared_input_tokens": tokens.max(0)})))
}

/// Drop the thinking of all assistant turns but the last `keep` that have
/// some; its tokens count only where the template renders thinking.
fn clear_thinking(conv: &mut Conversation, keep: Option<usize>, rendered: bool, count: &Counter) -> Option<Value> {
    let with: Vec<usize> = (0..conv.turns.len())
        .filter(|&t| {
            conv.turns[t].role == "assistant" && conv.turns[t].parts.iter().any(|p| matches!(p, Part::Thinking(_)))
        })
        .collect();
    let drop = keep.map_or(0, |k| with.len().saturating_sub(k));
    let mut tokens = 0;
    for &t in &with[..drop] {
        conv.turns[t].parts.retain(|p| match p {
            Part::Thinking(th) => {
                if rendered {
                    tokens += (count.text)(th);
                }
                false
            }
            _ => true,
        });
    }
    (drop > 0).then(|| json!({"type": CLEAR_THINKING, "cleared_thinking_turns": drop, "cleared_input_tokens": tokens}))
}

/// Run `edits` on `conv` in their order; the edits that applied, as the
/// response's `context_management.applied_edits`. `thinking`: the
/// template renders thinking (its tokens count).
pub fn apply(
    conv: &mut Conversation,
    edits: &Edits,
    memory: &Memory,
    remember: bool,
    thinking: bool,
    count: &Counter,
) -> Result<Vec<Value>, ApiError> {
    let mut applied = Vec::new();
    for e in &edits.0 {
        let done = match e {
            Edit::ToolUses(c) => clear_tool_uses(conv, c, memory, remember, count)?,
            Edit::Thinking(keep) => clear_thinking(conv, *keep, thinking, count),
        };
        applied.extend(done);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::super::content::Turn;
    use super::*;

    fn history(n: usize) -> Conversation {
        let mut turns = vec![Turn { role: "user".into(), parts: vec![Part::Text("Fix the parser.".into())] }];
        for i in 0..n {
            let name = if i == 1 { "todo" } else { "read" };
            turns.push(Turn {
                role: "assistant".into(),
                parts: vec![
                    Part::Thinking(format!("Step {i}: look at the file.")),
                    Part::ToolUse {
                        id: format!("toolu_{i}"),
                        name: name.into(),
                        input: json!({"path": format!("src/f{i}.rs")}),
                        cleared: false,
                    },
                ],
            });
            turns.push(Turn {
                role: "user".into(),
                parts: vec![Part::ToolResult {
                    id: format!("toolu_{i}"),
                    text: format!("src/f{i}.rs:\n{}", "fn a() {}\n".repeat(40)),
                    is_error: false,
                    cleared: false,
                }],
            });
        }
        turns.push(Turn { role: "user".into(), parts: vec![Part::Text("What next?".into())] });
        Conversation { system: Some("You are an agent.".into()), turns }
    }

    fn words(t: &str) -> usize {
        t.split_whitespace().count()
    }

    fn prompt(c: &Conversation) -> Result<usize, ApiError> {
        Ok(c.messages(true).iter().map(|m| words(&m.content) + 4).sum())
    }

    const COUNT: Counter = Counter { text: &words, prompt: &prompt };

    fn cleared(c: &Conversation) -> Vec<String> {
        c.turns
            .iter()
            .flat_map(|t| &t.parts)
            .filter_map(|p| match p {
                Part::ToolResult { id, cleared: true, .. } => Some(id.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn edits_are_checked_field_by_field() {
        let ok = json!({"edits": [{"type": CLEAR_TOOL_USES, "trigger": {"type": "input_tokens", "value": 500},
            "keep": {"type": "tool_uses", "value": 2}, "clear_at_least": {"type": "input_tokens", "value": 10},
            "exclude_tools": ["todo"], "clear_tool_inputs": ["read"]}, {"type": CLEAR_THINKING, "keep": "all"}]});
        let e = Edits::parse(Some(&ok)).unwrap();
        assert_eq!(
            e.0[0],
            Edit::ToolUses(ClearToolUses {
                trigger: Trigger::InputTokens(500),
                keep: 2,
                clear_at_least: Some(10),
                exclude: vec!["todo".into()],
                inputs: Inputs::Only(vec!["read".into()])
            })
        );
        assert_eq!(e.0[1], Edit::Thinking(None));
        let d = Edits::parse(Some(&json!({"edits": [{"type": CLEAR_TOOL_USES}, {"type": CLEAR_THINKING}]}))).unwrap();
        assert_eq!(
            d.0,
            vec![
                Edit::ToolUses(ClearToolUses {
                    trigger: Trigger::InputTokens(100_000),
                    keep: 3,
                    clear_at_least: None,
                    exclude: vec![],
                    inputs: Inputs::None
                }),
                Edit::Thinking(Some(1))
            ]
        );
        for (bad, at) in [
            (json!("clear"), "context_management:"),
            (json!({"edits": {}}), "context_management.edits:"),
            (json!({"edits": [{"type": "clear_everything"}]}), "context_management.edits[0].type"),
            (
                json!({"edits": [{"type": CLEAR_TOOL_USES, "trigger": {"type": "minutes", "value": 3}}]}),
                "edits[0].trigger.type",
            ),
            (
                json!({"edits": [{"type": CLEAR_TOOL_USES, "keep": {"type": "tool_uses", "value": "3"}}]}),
                "edits[0].keep.value",
            ),
            (json!({"edits": [{"type": CLEAR_TOOL_USES, "clear_tool_inputs": "yes"}]}), "edits[0].clear_tool_inputs"),
            (json!({"edits": [{"type": CLEAR_TOOL_USES, "exclude_tools": [1]}]}), "edits[0].exclude_tools[0]"),
            (json!({"edits": [{}, {"type": CLEAR_THINKING, "keep": 2}]}), "edits[0].type"),
            (json!({"edits": [{"type": CLEAR_THINKING, "keep": 2}]}), "edits[0].keep"),
        ] {
            let e = Edits::parse(Some(&bad)).unwrap_err();
            assert!(e.message.contains(at), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn tool_uses_clear_oldest_first_and_are_remembered() {
        let mem = Memory::default();
        let edit = |trigger, least| {
            Edits(vec![Edit::ToolUses(ClearToolUses {
                trigger: Trigger::InputTokens(trigger),
                keep: 2,
                clear_at_least: least,
                exclude: vec!["todo".into()],
                inputs: Inputs::Only(vec!["read".into()]),
            })])
        };
        // Under the trigger: nothing.
        let mut c = history(6);
        let total = prompt(&c).unwrap();
        assert!(apply(&mut c, &edit(total, None), &mem, true, true, &COUNT).unwrap().is_empty());
        // Past it: all but the last two and the excluded `todo` (use 1).
        let applied = apply(&mut c, &edit(total - 1, None), &mem, true, true, &COUNT).unwrap();
        assert_eq!(cleared(&c), ["toolu_0", "toolu_2", "toolu_3"]);
        assert_eq!(applied[0]["cleared_tool_uses"], 3);
        let saved = total - prompt(&c).unwrap();
        assert_eq!(applied[0]["cleared_input_tokens"].as_u64().unwrap() as usize, saved, "{applied:?}");
        let m = c.messages(true);
        assert!(m.iter().any(|m| m.content == CLEARED_RESULT));
        assert!(m.iter().any(|m| m.content.contains(CLEARED_INPUT)), "inputs of `read` cleared too");
        // The next request carries the full history plus a turn: the same
        // form from memory, though it no longer passes the trigger.
        let mut next = history(6);
        next.turns.push(Turn { role: "assistant".into(), parts: vec![Part::Text("Done.".into())] });
        let applied = apply(&mut next, &edit(usize::MAX, None), &mem, true, true, &COUNT).unwrap();
        assert_eq!(cleared(&next), ["toolu_0", "toolu_2", "toolu_3"]);
        assert_eq!(applied[0]["cleared_tool_uses"], 3);
        assert_eq!(next.messages(true)[..m.len() - 1], m[..m.len() - 1]);
        // clear_at_least: the fewest oldest uses that reach it, or none.
        let (mem2, mut c) = (Memory::default(), history(6));
        apply(&mut c, &edit(0, Some(30)), &mem2, false, true, &COUNT).unwrap();
        assert_eq!(cleared(&c), ["toolu_0"]);
        let mut c = history(6);
        assert!(apply(&mut c, &edit(0, Some(100_000)), &mem2, false, true, &COUNT).unwrap().is_empty());
        assert!(cleared(&c).is_empty());
    }

    #[test]
    fn thinking_of_older_turns_is_dropped() {
        let mut c = history(4);
        let applied =
            apply(&mut c, &Edits(vec![Edit::Thinking(Some(1))]), &Memory::default(), true, true, &COUNT).unwrap();
        assert_eq!(applied[0]["cleared_thinking_turns"], 3);
        assert_eq!(applied[0]["cleared_input_tokens"], 3 * 6);
        let thoughts = c.turns.iter().flat_map(|t| &t.parts).filter(|p| matches!(p, Part::Thinking(_))).count();
        assert_eq!(thoughts, 1);
        let mut c = history(4);
        assert!(apply(&mut c, &Edits(vec![Edit::Thinking(None)]), &Memory::default(), true, true, &COUNT)
            .unwrap()
            .is_empty());
    }
}
