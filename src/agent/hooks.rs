//! Hooks: shell commands the user configures in `.decache/agent.toml` to
//! run before or after a tool call. Their output enters the context as a
//! hook segment. A hook that exits 0 applied; any other exit status means
//! it did not apply to this call (a formatter for another language, a check
//! that found nothing to say) and its output is the first thing forgotten.
//!
//! ```toml
//! [[hook]]
//! when = "after"          # "before" or "after"
//! tool = "edit_file"      # a tool name, or "*" for every tool
//! command = "cargo check --quiet"
//! timeout_secs = 60       # optional (default 30)
//! ```
//! The command runs in the project folder with `DECACHE_TOOL` (the tool's
//! name) and `DECACHE_ARGS` (its arguments as JSON) set.
use super::command::{shell, End};
use crate::toolcall::ToolCall;
use serde::Deserialize;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    pub when: When,
    pub tool: String,
    pub command: String,
    pub timeout_secs: Option<u64>,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum When {
    Before,
    After,
}

/// `.decache/agent.toml`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    #[serde(default, rename = "hook")]
    pub hooks: Vec<Hook>,
}

impl AgentFile {
    /// The folder's `.decache/agent.toml`, or no hooks if it has none. A
    /// file that does not parse is an error naming it and the place.
    pub fn load(root: &Path) -> Result<AgentFile, String> {
        let path = root.join(".decache").join("agent.toml");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(AgentFile::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let f: AgentFile =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.to_string().trim()))?;
        if let Some(h) = f.hooks.iter().find(|h| h.command.trim().is_empty()) {
            return Err(format!("{}: the hook for tool '{}' has an empty command", path.display(), h.tool));
        }
        Ok(f)
    }

    /// The hooks for `tool` at `when`.
    pub fn matching<'a>(&'a self, when: When, tool: &'a str) -> impl Iterator<Item = &'a Hook> + 'a {
        self.hooks.iter().filter(move |h| h.when == when && (h.tool == "*" || h.tool == tool))
    }
}

/// A hook's run: the text for the context and whether it applied.
#[derive(Clone, Debug)]
pub struct HookRun {
    pub text: String,
    pub applied: bool,
    pub summary: String,
}

pub fn run(root: &Path, hook: &Hook, call: &ToolCall, cancel: &AtomicBool) -> HookRun {
    let env = [("DECACHE_TOOL", call.name.clone()), ("DECACHE_ARGS", call.arguments.to_string())];
    let timeout = Duration::from_secs(hook.timeout_secs.unwrap_or(30));
    let when = match hook.when {
        When::Before => "before",
        When::After => "after",
    };
    let head = format!("<hook when=\"{when}\" tool=\"{}\" command={:?}>", call.name, hook.command);
    match shell(root, &hook.command, &env, timeout, 8 << 10, cancel) {
        Ok(s) => {
            let (applied, status) = match s.end {
                End::Exit(Some(0)) => (true, "exit 0".to_string()),
                End::Exit(Some(c)) => (false, format!("exit {c}")),
                End::Exit(None) => (false, "killed".to_string()),
                End::TimedOut => (false, format!("timed out after {} s", timeout.as_secs())),
                End::Cancelled => (false, "interrupted".to_string()),
            };
            HookRun { text: format!("{head}\n{}\n[{status}]\n</hook>", s.output.trim_end()), applied, summary: status }
        }
        Err(e) => HookRun { text: format!("{head}\n{}\n</hook>", e.0), applied: false, summary: e.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_parses_and_bad_ones_say_where() {
        let dir = tempfile::tempdir().unwrap();
        assert!(AgentFile::load(dir.path()).unwrap().hooks.is_empty(), "no file, no hooks");
        std::fs::create_dir(dir.path().join(".decache")).unwrap();
        let file = dir.path().join(".decache/agent.toml");
        std::fs::write(&file, "[[hook]]\nwhen = \"after\"\ntool = \"*\"\ncommand = \"echo $DECACHE_TOOL\"\n").unwrap();
        let f = AgentFile::load(dir.path()).unwrap();
        assert_eq!(f.matching(When::After, "grep").count(), 1);
        assert_eq!(f.matching(When::Before, "grep").count(), 0);
        let call = ToolCall { name: "grep".into(), arguments: serde_json::json!({"pattern": "x"}) };
        let r = run(dir.path(), &f.hooks[0], &call, &AtomicBool::new(false));
        assert!(r.applied && r.text.contains("\ngrep\n"), "{}", r.text);
        let h = Hook { when: When::Before, tool: "*".into(), command: "exit 4".into(), timeout_secs: None };
        assert!(!run(dir.path(), &h, &call, &AtomicBool::new(false)).applied);
        std::fs::write(&file, "[[hook]]\nwhen = \"sometimes\"\ntool = \"*\"\ncommand = \"x\"\n").unwrap();
        let e = AgentFile::load(dir.path()).unwrap_err();
        assert!(e.contains("agent.toml") && e.contains("sometimes"), "{e}");
    }
}
