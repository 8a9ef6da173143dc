//! The agent's tools: what each is (name, description, JSON schema), and
//! running one call. Every failure (a missing file, a path outside the
//! folder, a binary file, a timeout ...) comes back as a `ToolError` whose
//! text goes to the model; nothing here panics or stops the session.
use super::command::run_command;
use super::files;
use super::workspace::Workspace;
use crate::context::segments::SegmentKind;
use crate::toolcall::ToolCall;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

/// Caps on what a tool reads, lists and captures.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest file `read_file` shows whole (a line range reads bigger ones).
    pub max_read_bytes: u64,
    /// Output a tool returns at most (a command's head and tail are kept).
    pub max_output_bytes: usize,
    /// Default time a command may run (`timeout_secs` asks for another, up to `max_timeout`).
    pub command_timeout: Duration,
    pub max_timeout: Duration,
    /// Entries (list_dir, glob) and matches (grep) at most.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_read_bytes: 256 << 10,
            max_output_bytes: 32 << 10,
            command_timeout: Duration::from_secs(60),
            max_timeout: Duration::from_secs(600),
            max_entries: 200,
        }
    }
}

/// What a tool call gave back.
#[derive(Clone, Debug)]
pub struct ToolOutput {
    /// What the model reads.
    pub text: String,
    /// What it is, for the decache policy.
    pub kind: SegmentKind,
    /// One line for the person watching.
    pub summary: String,
    /// A file this call wrote (earlier reads of it are stale).
    pub wrote: Option<PathBuf>,
}

/// A failed call: the message the model reads (and the person sees).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolError(pub String);

impl<T: Into<String>> From<T> for ToolError {
    fn from(s: T) -> Self {
        ToolError(s.into())
    }
}

/// One item of the model's task list.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Todo {
    pub content: String,
    /// `pending`, `in_progress` or `completed`.
    pub status: String,
}

/// A tool as offered to the model.
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    /// Whether it changes something (asks permission; refused in read-only mode).
    pub changes: bool,
    params: fn() -> Value,
}

impl ToolSpec {
    /// The tool in OpenAI's function shape.
    pub fn json(&self) -> Value {
        json!({"type": "function", "function": {"name": self.name, "description": self.description, "parameters": (self.params)()}})
    }
}

fn obj(props: Value, required: &[&str]) -> Value {
    json!({"type": "object", "properties": props, "required": required})
}

pub const TOOLS: &[ToolSpec] = &[
    ToolSpec {
        name: "read_file",
        description: "Read a text file of the project, optionally lines start_line..end_line (1-based, inclusive).",
        changes: false,
        params: || obj(json!({"path": {"type": "string"}, "start_line": {"type": "integer"}, "end_line": {"type": "integer"}}), &["path"]),
    },
    ToolSpec {
        name: "list_dir",
        description: "List a directory of the project (default: its root); directories end with /.",
        changes: false,
        params: || obj(json!({"path": {"type": "string"}}), &[]),
    },
    ToolSpec {
        name: "glob",
        description: "Find files whose path matches a glob pattern such as **/*.rs.",
        changes: false,
        params: || obj(json!({"pattern": {"type": "string"}}), &["pattern"]),
    },
    ToolSpec {
        name: "grep",
        description: "Search file contents with a regular expression; results are file:line: text. Optional path (file or directory) and glob filter.",
        changes: false,
        params: || obj(json!({"pattern": {"type": "string"}, "path": {"type": "string"}, "glob": {"type": "string"}}), &["pattern"]),
    },
    ToolSpec {
        name: "run_command",
        description: "Run a shell command in the project folder; returns its output and exit code.",
        changes: true,
        params: || obj(json!({"command": {"type": "string"}, "timeout_secs": {"type": "integer"}}), &["command"]),
    },
    ToolSpec {
        name: "write_file",
        description: "Create or overwrite a file of the project with the given content.",
        changes: true,
        params: || obj(json!({"path": {"type": "string"}, "content": {"type": "string"}}), &["path", "content"]),
    },
    ToolSpec {
        name: "edit_file",
        description: "Replace old_string, which must occur exactly once (or every time with replace_all), by new_string in a file.",
        changes: true,
        params: || {
            obj(
                json!({"path": {"type": "string"}, "old_string": {"type": "string"}, "new_string": {"type": "string"}, "replace_all": {"type": "boolean"}}),
                &["path", "old_string", "new_string"],
            )
        },
    },
    ToolSpec {
        name: "forget",
        description: "Forget part of your context to keep it small: a tool result by its number (result: N, or [first, last] for several), every read of a file (path), or your finished thinking (thinking: true). An optional note is kept instead: what you must remember of it.",
        changes: false,
        params: || {
            obj(
                json!({"result": {"type": ["integer", "array"], "items": {"type": "integer"}}, "path": {"type": "string"}, "thinking": {"type": "boolean"}, "note": {"type": "string"}}),
                &[],
            )
        },
    },
    ToolSpec {
        name: "todo",
        description: "Replace your task list: items of {content, status} with status pending, in_progress or completed.",
        changes: false,
        params: || {
            obj(
                json!({"items": {"type": "array", "items": obj(json!({"content": {"type": "string"}, "status": {"type": "string"}}), &["content", "status"])}}),
                &["items"],
            )
        },
    },
];

pub fn spec(name: &str) -> Option<&'static ToolSpec> {
    TOOLS.iter().find(|t| t.name == name)
}

/// The tools as OpenAI function objects (for the system prompt).
pub fn offered() -> Vec<Value> {
    TOOLS.iter().map(ToolSpec::json).collect()
}

/// The tools' names (what a call may name).
pub fn names() -> Vec<String> {
    TOOLS.iter().map(|t| t.name.to_string()).collect()
}

/// A string argument (required).
pub fn arg_str<'a>(args: &'a Value, name: &str) -> Result<&'a str, ToolError> {
    match args.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(format!("argument {name} must be a string, got {v}").into()),
        None => Err(format!("missing argument {name}").into()),
    }
}

/// An optional string argument.
pub fn opt_str<'a>(args: &'a Value, name: &str) -> Result<Option<&'a str>, ToolError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => arg_str(args, name).map(Some),
    }
}

/// An optional non-negative integer argument.
pub fn opt_u64(args: &Value, name: &str) -> Result<Option<u64>, ToolError> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("argument {name} must be a non-negative integer, got {v}").into()),
    }
}

/// The tools over one folder, with the state they keep (the task list).
pub struct Toolbox {
    pub ws: Workspace,
    pub limits: Limits,
    pub read_only: bool,
    pub todos: Vec<Todo>,
}

impl Toolbox {
    pub fn new(ws: Workspace, limits: Limits, read_only: bool) -> Toolbox {
        Toolbox { ws, limits, read_only, todos: Vec::new() }
    }

    /// Run one call (permission already given). `cancel` stops a command.
    pub fn run(&mut self, call: &ToolCall, cancel: &AtomicBool) -> Result<ToolOutput, ToolError> {
        let Some(spec) = spec(&call.name) else {
            let names: Vec<&str> = TOOLS.iter().map(|t| t.name).collect();
            return Err(format!("unknown tool '{}'; the tools are: {}", call.name, names.join(", ")).into());
        };
        if spec.changes && self.read_only {
            return Err(format!("{} is not allowed: the agent runs in read-only mode", spec.name).into());
        }
        let a = &call.arguments;
        match spec.name {
            "read_file" => files::read_file(&self.ws, &self.limits, a),
            "list_dir" => files::list_dir(&self.ws, &self.limits, a),
            "glob" => files::glob(&self.ws, &self.limits, a),
            "grep" => files::grep(&self.ws, &self.limits, a),
            "write_file" => files::write_file(&self.ws, a),
            "edit_file" => files::edit_file(&self.ws, a),
            "run_command" => run_command(&self.ws, &self.limits, a, cancel),
            "todo" => self.set_todos(a),
            "forget" => Err("forget acts on the conversation: the agent runs it, not the toolbox".into()),
            other => Err(format!("tool {other} has no implementation").into()),
        }
    }

    fn set_todos(&mut self, a: &Value) -> Result<ToolOutput, ToolError> {
        let items = a.get("items").or_else(|| a.get("todos")).ok_or("missing argument items")?;
        let todos: Vec<Todo> = serde_json::from_value(items.clone())
            .map_err(|e| format!("items must be a list of {{\"content\": string, \"status\": string}}: {e}"))?;
        if let Some(t) = todos.iter().find(|t| !matches!(t.status.as_str(), "pending" | "in_progress" | "completed")) {
            return Err(
                format!("status '{}' of '{}': use pending, in_progress or completed", t.status, t.content).into()
            );
        }
        self.todos = todos;
        let done = self.todos.iter().filter(|t| t.status == "completed").count();
        Ok(ToolOutput {
            text: format!("The task list now has {} items ({done} completed).", self.todos.len()),
            kind: SegmentKind::CommandOutput { passed: Some(true) },
            summary: format!("{} items, {done} completed", self.todos.len()),
            wrote: None,
        })
    }

    /// The task list as text (for the reminder), or `None` when empty.
    pub fn todo_text(&self) -> Option<String> {
        if self.todos.is_empty() {
            return None;
        }
        let lines: Vec<String> = self
            .todos
            .iter()
            .map(|t| {
                let mark = match t.status.as_str() {
                    "completed" => "[x]",
                    "in_progress" => "[~]",
                    _ => "[ ]",
                };
                format!("{mark} {}", t.content)
            })
            .collect();
        Some(lines.join("\n"))
    }
}
