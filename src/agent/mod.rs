//! `decache agent`: a coding agent over one `Conversation`. The model (or a
//! scripted test double, through [`Responder`]) answers; tool calls in its
//! reply are parsed, permitted, run inside the project folder and their
//! results enter the context as segments of their kind (file read, command
//! output, search result), with reminders and hook output beside them. The
//! decache policy forgets what is stale in place, so the session never
//! stops at the context limit. The library returns events; the CLI prints.
pub mod command;
pub mod files;
pub mod forget;
pub mod hooks;
pub mod log;
pub mod reminders;
pub mod script;
pub mod sweep;
pub mod tools;
pub mod workspace;

use crate::context::policy::Reason;
use crate::context::segments::SegmentKind;
use crate::error::Result;
use crate::session::conversation::{Conversation, DecacheEvent};
use crate::session::{GenerateEvent, GenerateOptions};
use crate::toolcall::{self, ToolCall};
use hooks::{AgentFile, When};
use log::SessionLog;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use tools::{ToolError, ToolOutput, Toolbox};

/// Calls of one reply that run (the rest get an error).
pub const MAX_CALLS_PER_REPLY: usize = 4;

/// The system prompt: how to call tools (prompts/agent.md) and the tools.
pub fn system_prompt() -> String {
    let tools: Vec<String> = tools::TOOLS.iter().map(|t| t.json()["function"].to_string()).collect();
    format!("{}<tools>\n{}\n</tools>", include_str!("../../prompts/agent.md"), tools.join("\n"))
}

/// Something the person watching should see.
#[derive(Debug)]
pub enum AgentEvent<'a> {
    /// Model text as it streams.
    Text(&'a str),
    /// A reply is complete.
    ReplyDone,
    Call {
        name: &'a str,
        arguments: &'a Value,
    },
    Result {
        name: &'a str,
        ok: bool,
        summary: &'a str,
        text: &'a str,
    },
    Hook {
        applied: bool,
        summary: &'a str,
    },
    Decache(&'a DecacheEvent),
    /// After each step: live cells of the cache, its size, the turn.
    Status {
        live: usize,
        cells: usize,
        turn: u32,
    },
    /// A problem that does not stop the session (a log that cannot be written).
    Warning(String),
}

/// The answer to a permission question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    Yes,
    No,
    /// Yes, and do not ask again for this tool.
    Always,
}

/// Where the agent's events go, and who answers its questions.
pub trait AgentUi {
    fn event(&mut self, ev: AgentEvent<'_>);
    /// May `tool` run with `arguments`?
    fn permit(&mut self, tool: &str, arguments: &Value) -> Permit;
}

/// Who writes the assistant's messages: the model, or a test double.
pub trait Responder {
    /// Add the assistant's next message to `conv` (generated, or scripted and
    /// evaluated), streaming its text through `on_text` (which returns false
    /// to stop). Returns the text and the deletions made to fit it.
    fn respond(
        &mut self,
        conv: &mut Conversation,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, Vec<DecacheEvent>)>;
}

/// The model answers, sampling with `opts`.
pub struct ModelResponder {
    pub opts: GenerateOptions,
}

impl Responder for ModelResponder {
    fn respond(
        &mut self,
        conv: &mut Conversation,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(String, Vec<DecacheEvent>)> {
        let (gen, events) = conv.reply(&self.opts, &mut |e| match e {
            GenerateEvent::Token { text, .. } => on_text(text),
            _ => true,
        })?;
        Ok((gen.text, events))
    }
}

/// Settings of an agent session.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// Replies per user message at most (each may call tools).
    pub max_steps: usize,
    /// Run writes and commands without asking.
    pub yes: bool,
    /// The chat template speaks harmony (gpt-oss): replies are split into
    /// channels, and calls come from them (or, failing those, from the
    /// Hermes blocks the system prompt asks for).
    pub harmony: bool,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig { max_steps: 24, yes: false, harmony: false }
    }
}

/// How a user message's work ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TurnEnd {
    /// The model answered without calling a tool.
    Answered(String),
    /// Ctrl-C.
    Interrupted,
    /// `max_steps` replies, still calling tools.
    StepLimit,
}

/// Running totals.
#[derive(Clone, Debug, Default)]
pub struct AgentStats {
    pub steps: usize,
    pub tool_calls: usize,
    pub tool_errors: usize,
    pub hooks: usize,
    pub decache_events: usize,
}

/// A file as it was when read: length and modification time.
type Stamp = (u64, Option<SystemTime>);

fn stamp(p: &std::path::Path) -> Option<Stamp> {
    std::fs::metadata(p).ok().map(|m| (m.len(), m.modified().ok()))
}

pub struct Agent {
    pub conv: Conversation,
    pub tools: Toolbox,
    pub hooks: AgentFile,
    pub cfg: AgentConfig,
    /// Set by Ctrl-C: stops the model and a running command.
    pub cancel: Arc<AtomicBool>,
    pub stats: AgentStats,
    pub log: Option<SessionLog>,
    /// Tools the person allowed for the session.
    always: HashSet<String>,
    /// Files read, as they were then (shown path → real path, stamp).
    reads: HashMap<String, (PathBuf, Option<Stamp>)>,
    /// The reminders last given (so unchanged ones are not repeated).
    last_date: Option<String>,
    last_todo: Option<Option<String>>,
    /// A failed log write, to be reported once (then `Some(None)`).
    log_warning: Option<Option<String>>,
    /// The segments of each tool result, by its number (from 1): what
    /// `forget` with `result` names.
    results: Vec<Vec<u64>>,
}

impl Agent {
    /// An agent over `conv` (empty) with `tools`; the system prompt goes in first.
    pub fn new(
        mut conv: Conversation,
        tools: Toolbox,
        hooks: AgentFile,
        cfg: AgentConfig,
        log: Option<SessionLog>,
    ) -> Result<Agent> {
        let sys = system_prompt();
        conv.push("system", &sys, SegmentKind::System)?;
        let mut a = Agent {
            conv,
            tools,
            hooks,
            cfg,
            cancel: Arc::new(AtomicBool::new(false)),
            stats: AgentStats::default(),
            log,
            always: HashSet::new(),
            reads: HashMap::new(),
            last_date: None,
            last_todo: None,
            log_warning: None,
            results: Vec::new(),
        };
        a.log_value(&json!({"type": "start", "version": 1, "model": a.conv.session.model().info.path, "n_ctx": a.conv.session.n_ctx()}));
        a.log_message("system", &sys, &SegmentKind::System);
        Ok(a)
    }

    /// Continue a logged session: its messages enter the context again (the
    /// policy forgets as they go in), and its task list comes back.
    pub fn resume(&mut self, r: &log::Resumed, ui: &mut dyn AgentUi) -> Result<()> {
        // What is in the log already is not logged again.
        let log = self.log.take();
        let res = r
            .messages
            .iter()
            .filter(|m| m.kind != SegmentKind::System)
            .try_for_each(|m| self.add(&m.role, &m.content, m.kind.clone(), ui));
        self.log = log;
        res?;
        self.tools.todos = r.todos.clone();
        self.last_todo = Some(self.tools.todo_text());
        Ok(())
    }

    fn log_value(&mut self, v: &Value) {
        if let Some(l) = &mut self.log {
            if let Err(e) = l.write(v) {
                if self.log_warning.is_none() {
                    self.log_warning =
                        Some(Some(format!("the session log {} cannot be written: {e}", l.path().display())));
                }
            }
        }
    }

    fn log_message(&mut self, role: &str, content: &str, kind: &SegmentKind) {
        self.log_value(&log::message_entry(role, content, kind));
    }

    /// Report and log deletions.
    fn decached(&mut self, events: &[DecacheEvent], ui: &mut dyn AgentUi) {
        for e in events {
            self.stats.decache_events += 1;
            self.log_value(&log::decache_entry(e));
            ui.event(AgentEvent::Decache(e));
        }
    }

    /// Put a message into the context (and the log). A tool result's
    /// segments are remembered under its number.
    fn add(&mut self, role: &str, content: &str, kind: SegmentKind, ui: &mut dyn AgentUi) -> Result<()> {
        let first = self.conv.segments.next_id();
        let events = self.conv.push(role, content, kind.clone())?;
        if role == "tool" {
            self.results.push((first..self.conv.segments.next_id()).collect());
        }
        self.decached(&events, ui);
        self.log_message(role, content, &kind);
        Ok(())
    }

    /// Put a tool result into the context under its number (`[result N]`,
    /// what `forget` takes).
    fn add_result(&mut self, text: &str, kind: SegmentKind, ui: &mut dyn AgentUi) -> Result<()> {
        let numbered = format!("[result {}]\n{text}", self.results.len() + 1);
        self.add("tool", &numbered, kind, ui)
    }

    /// The reminders due now: the date once a day, the task list when it changed.
    fn remind(&mut self, ui: &mut dyn AgentUi) -> Result<()> {
        let today = crate::tokenizer::strftime_now("%Y-%m-%d".into());
        if self.last_date.as_deref() != Some(today.as_str()) {
            let r = reminders::date(&today);
            self.add("user", &r.text, SegmentKind::SystemReminder { key: r.key }, ui)?;
            self.last_date = Some(today);
        }
        let list = self.tools.todo_text();
        if self.last_todo.as_ref() != Some(&list) {
            let r = reminders::todo(list.as_deref());
            self.add("user", &r.text, SegmentKind::SystemReminder { key: r.key }, ui)?;
            self.last_todo = Some(list);
        }
        Ok(())
    }

    /// Work on one user message until the model answers without a tool
    /// call, Ctrl-C, or `max_steps` replies.
    pub fn turn(&mut self, user: &str, responder: &mut dyn Responder, ui: &mut dyn AgentUi) -> Result<TurnEnd> {
        self.cancel.store(false, Ordering::SeqCst);
        self.remind(ui)?;
        self.add("user", user, SegmentKind::User, ui)?;
        for step in 0..self.cfg.max_steps {
            if step > 0 {
                self.conv.next_turn();
                self.remind(ui)?;
            }
            self.stats.steps += 1;
            let cancel = self.cancel.clone();
            let (text, events) = responder.respond(&mut self.conv, &mut |t| {
                ui.event(AgentEvent::Text(t));
                !cancel.load(Ordering::SeqCst)
            })?;
            ui.event(AgentEvent::ReplyDone);
            self.decached(&events, ui);
            self.log_message("assistant", &text, &SegmentKind::Assistant);
            if self.cancel.load(Ordering::SeqCst) {
                self.status(ui);
                return Ok(TurnEnd::Interrupted);
            }
            let parsed =
                if self.cfg.harmony { crate::harmony::parse_with_hermes(&text).parsed } else { toolcall::parse(&text) };
            if parsed.calls.is_empty() && parsed.malformed.is_empty() {
                self.status(ui);
                // A harmony reply's answer is its text, without the analysis.
                return Ok(TurnEnd::Answered(if self.cfg.harmony { parsed.text } else { text }));
            }
            let n_results = (parsed.malformed.len() + parsed.calls.len()).clamp(1, MAX_CALLS_PER_REPLY + 1);
            for m in &parsed.malformed {
                self.stats.tool_errors += 1;
                let msg = format!(
                    "error: {m}. Write each call as <tool_call>{{\"name\": …, \"arguments\": {{…}}}}</tool_call>."
                );
                ui.event(AgentEvent::Result { name: "?", ok: false, summary: m, text: &msg });
                self.add_result(&msg, SegmentKind::CommandOutput { passed: Some(false) }, ui)?;
            }
            for call in parsed.calls.iter().take(MAX_CALLS_PER_REPLY) {
                self.call(call, n_results, ui)?;
                if self.cancel.load(Ordering::SeqCst) {
                    self.status(ui);
                    return Ok(TurnEnd::Interrupted);
                }
            }
            if parsed.calls.len() > MAX_CALLS_PER_REPLY {
                let msg = format!(
                    "error: only the first {MAX_CALLS_PER_REPLY} of {} calls ran; call the rest in your next reply",
                    parsed.calls.len()
                );
                self.add_result(&msg, SegmentKind::CommandOutput { passed: Some(false) }, ui)?;
            }
            self.status(ui);
        }
        Ok(TurnEnd::StepLimit)
    }

    fn status(&mut self, ui: &mut dyn AgentUi) {
        if let Some(Some(w)) = self.log_warning.as_mut().map(Option::take) {
            ui.event(AgentEvent::Warning(w));
        }
        ui.event(AgentEvent::Status {
            live: self.conv.session.n_live(),
            cells: self.conv.session.n_ctx(),
            turn: self.conv.turn(),
        });
    }

    /// Run one call: permission, hooks before, the tool, its result into the
    /// context (cut to its share of the cache), stale reads forgotten, hooks after.
    fn call(&mut self, call: &ToolCall, n_results: usize, ui: &mut dyn AgentUi) -> Result<()> {
        self.stats.tool_calls += 1;
        ui.event(AgentEvent::Call { name: &call.name, arguments: &call.arguments });
        let changes = tools::spec(&call.name).is_some_and(|s| s.changes);
        let asks = changes && !self.tools.read_only && !self.cfg.yes && !self.always.contains(&call.name);
        let permit = if asks { ui.permit(&call.name, &call.arguments) } else { Permit::Yes };
        if permit == Permit::Always {
            self.always.insert(call.name.clone());
        }
        let result = if permit == Permit::No {
            Err(ToolError(format!("the user declined to run {}; ask them or try another way", call.name)))
        } else if call.name == "forget" {
            self.forget_call(&call.arguments, ui)?
        } else {
            self.hooks_for(When::Before, call, ui)?;
            self.tools.run(call, &self.cancel)
        };
        let (text, kind, ok, summary, wrote) = match result {
            Ok(ToolOutput { mut text, kind, summary, wrote }) => {
                if let SegmentKind::FileRead { path } = &kind {
                    text.push_str(reminders::after_read());
                    if let Ok(real) = self.tools.ws.resolve(path) {
                        self.reads.insert(path.clone(), (real.clone(), stamp(&real)));
                    }
                }
                (text, kind, true, summary, wrote)
            }
            Err(ToolError(e)) => {
                self.stats.tool_errors += 1;
                (format!("error: {e}"), SegmentKind::CommandOutput { passed: Some(false) }, false, e, None)
            }
        };
        let text = self.fit(&text, n_results);
        ui.event(AgentEvent::Result { name: &call.name, ok, summary: &summary, text: &text });
        self.log_value(
            &json!({"type": "call", "name": call.name, "arguments": call.arguments, "ok": ok, "summary": summary}),
        );
        if call.name == "todo" && ok {
            let items = serde_json::to_value(&self.tools.todos).unwrap_or_default();
            self.log_value(&json!({"type": "todos", "items": items}));
        }
        self.add_result(&text, kind, ui)?;
        if wrote.is_some() || call.name == "run_command" {
            self.forget_changed_reads(ui)?;
        }
        if permit != Permit::No {
            self.hooks_for(When::After, call, ui)?;
        }
        Ok(())
    }

    /// Forget earlier reads of files that changed since (re-readable).
    fn forget_changed_reads(&mut self, ui: &mut dyn AgentUi) -> Result<()> {
        let changed: Vec<String> =
            self.reads.iter().filter(|(_, (real, st))| stamp(real) != *st).map(|(p, _)| p.clone()).collect();
        for path in changed {
            self.reads.remove(&path);
            let events = self.conv.forget_where(
                |s| matches!(&s.kind, SegmentKind::FileRead { path: p } if *p == path),
                Reason::StaleFileRead,
            )?;
            self.decached(&events, ui);
        }
        Ok(())
    }

    fn hooks_for(&mut self, when: When, call: &ToolCall, ui: &mut dyn AgentUi) -> Result<()> {
        let hooks: Vec<hooks::Hook> = self.hooks.matching(when, &call.name).cloned().collect();
        for h in hooks {
            self.stats.hooks += 1;
            let run = hooks::run(self.tools.ws.root(), &h, call, &self.cancel);
            ui.event(AgentEvent::Hook { applied: run.applied, summary: &run.summary });
            let text = self.fit(&run.text, 4);
            self.add("user", &text, SegmentKind::HookOutput { applied: run.applied }, ui)?;
        }
        Ok(())
    }

    /// `text` cut to its share of the cache (a quarter of it, split between
    /// the results of one reply): head and tail lines kept, the middle noted.
    fn fit(&self, text: &str, n_results: usize) -> String {
        let budget = self.conv.session.n_ctx() / 4 / n_results.max(1);
        let tok = &self.conv.session.model().tokenizer;
        let count = |t: &str| tok.encode(t, false, false).map_or(t.len(), |v| v.len());
        let n = count(text);
        if n <= budget {
            return text.to_string();
        }
        let lines: Vec<&str> = text.lines().collect();
        let mut keep = (lines.len() * budget / n).max(2);
        loop {
            let (head, tail) = (keep.div_ceil(2), keep / 2);
            let out = if lines.len() <= head + tail {
                // Few long lines: cut by characters.
                let chars: Vec<char> = text.chars().collect();
                let k = (chars.len() * budget / n.max(1) * 9 / 10).max(1);
                let h: String = chars[..k / 2].iter().collect();
                let t: String = chars[chars.len() - k / 2..].iter().collect();
                format!("{h}\n[… {} characters cut to fit the context …]\n{t}", chars.len() - k)
            } else {
                let cut = lines.len() - head - tail;
                format!(
                    "{}\n[… {cut} lines cut to fit the context …]\n{}",
                    lines[..head].join("\n"),
                    lines[lines.len() - tail..].join("\n")
                )
            };
            if count(&out) <= budget || keep <= 2 {
                return out;
            }
            keep = keep * 3 / 4;
        }
    }
}
