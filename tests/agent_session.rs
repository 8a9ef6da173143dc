//! `decache agent` sessions driven end to end through a model's cache: a
//! scripted model (a test double that emits tool calls; every token of its
//! replies and of the tool results is evaluated into a 4096-cell cache of a
//! random-weight model with SmolLM2's vocabulary) works on a fixture
//! project for hundreds of calls; bad
//! tool input of every kind gets a clear tool error while the session goes
//! on; and a short session with the real model's own replies holds.
mod common;
use decache::agent::hooks::{AgentFile, Hook, When};
use decache::agent::log::SessionLog;
use decache::agent::script::Scripted;
use decache::agent::tools::{Limits, Toolbox};
use decache::agent::workspace::Workspace;
use decache::agent::{Agent, AgentConfig, AgentEvent, AgentUi, ModelResponder, Permit, TurnEnd};
use decache::context::policy::DecachePolicy;
use decache::context::segments::SegmentKind;
use decache::model::{LoadOptions, Model};
use decache::sampling::SamplingParams;
use decache::session::conversation::Conversation;
use decache::session::{GenerateOptions, Session, SessionConfig};
use decache::tokenizer::ChatTemplate;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What the test sees of the session.
#[derive(Default)]
struct Recorder {
    results: Vec<(String, bool, String)>,
    decache: Vec<(usize, &'static str, &'static str)>,
    max_live: usize,
    hooks: Vec<(bool, String)>,
    cells: usize,
    asked: usize,
    /// Decline every write and command (the real model's are not run).
    deny: bool,
}

impl AgentUi for Recorder {
    fn event(&mut self, ev: AgentEvent<'_>) {
        match ev {
            AgentEvent::Result { name, ok, text, .. } => self.results.push((name.to_string(), ok, text.to_string())),
            AgentEvent::Decache(e) => self.decache.push((e.cells, e.reason.name(), e.kind)),
            AgentEvent::Hook { applied, summary } => self.hooks.push((applied, summary.to_string())),
            AgentEvent::Status { live, cells, .. } => {
                self.max_live = self.max_live.max(live);
                self.cells = cells;
            }
            _ => {}
        }
    }

    fn permit(&mut self, _tool: &str, _args: &Value) -> Permit {
        self.asked += 1;
        if self.deny {
            Permit::No
        } else {
            Permit::Always
        }
    }
}

fn agent(model: &Path, root: &Path, n_ctx: usize, limits: Limits, log: bool, policy: DecachePolicy) -> Agent {
    let model = Arc::new(Model::load(model, &LoadOptions::default()).unwrap());
    let template = ChatTemplate::new(model.tokenizer.chat_template().unwrap()).unwrap();
    let session = Session::new(model, SessionConfig { n_ctx, n_threads: 2, ..SessionConfig::default() }).unwrap();
    let conv = Conversation::new(session, template, policy);
    let ws = Workspace::new(root).unwrap();
    let log = log.then(|| SessionLog::create(ws.root()).unwrap());
    Agent::new(conv, Toolbox::new(ws, limits, false), AgentFile::default(), AgentConfig::default(), log).unwrap()
}

fn call(name: &str, args: Value) -> String {
    format!("<tool_call>\n{}\n</tool_call>", serde_json::json!({"name": name, "arguments": args}))
}

/// A small project: eight source files, a test script with a long passing
/// log, and beside the project a folder that must never be touched.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("proj");
    let outside = dir.join("outside");
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "do not touch").unwrap();
    for f in 0..8 {
        let body: String = (0..30)
            .map(|i| format!("pub fn f{f}_{i}(x: u64) -> u64 {{ x.wrapping_mul({}) ^ {i} }}\n", f * 7 + i + 3))
            .collect();
        std::fs::write(root.join(format!("src/m{f}.rs")), format!("// module {f}\n// edits:\n{body}")).unwrap();
    }
    let tests: String = (0..40).map(|i| format!("echo 'test parser::case_{i} ... ok'\n")).collect();
    std::fs::write(
        root.join("test.sh"),
        format!("{tests}echo 'test result: ok. 40 passed; 0 failed; finished in 0.42s'\n"),
    )
    .unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    (root, outside)
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walk(dir).into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The calls of one user turn: reads (and re-reads), a search, the test
/// run, an edit (so an earlier read goes stale), a listing, the task list,
/// and now and then a call that must fail.
fn turn_calls(t: usize) -> Vec<String> {
    let (a, b) = (t % 8, (t + 3) % 8);
    let mut calls = vec![
        call(
            "todo",
            serde_json::json!({"items": [{"content": format!("turn {t}: tidy m{a}"), "status": "in_progress"},
            {"content": "run the tests", "status": "pending"}]}),
        ),
        call("read_file", serde_json::json!({"path": format!("src/m{a}.rs")})),
        call("grep", serde_json::json!({"pattern": format!("fn f{b}_1[0-9]"), "path": "src"})),
        call("run_command", serde_json::json!({"command": "sh test.sh"})),
        call("read_file", serde_json::json!({"path": format!("src/m{b}.rs"), "start_line": 1, "end_line": 25})),
        call(
            "edit_file",
            serde_json::json!({"path": format!("src/m{a}.rs"), "old_string": "// edits:", "new_string": format!("// edits: t{t}")}),
        ),
        call("run_command", serde_json::json!({"command": format!("grep -c edits src/m{a}.rs")})),
        call("list_dir", serde_json::json!({"path": "src"})),
        call("glob", serde_json::json!({"pattern": "src/*.rs"})),
    ];
    calls.push(match t % 5 {
        0 => call("read_file", serde_json::json!({"path": "../outside/secret.txt"})),
        1 => call("write_file", serde_json::json!({"path": "link/new.txt", "content": "pwned"})),
        2 => call("edit_file", serde_json::json!({"path": "/etc/hostname", "old_string": "a", "new_string": "b"})),
        3 => "<tool_call>{\"name\": \"read_file\", \"arguments\": {\"path\": </tool_call>".to_string(),
        _ => call("delete_everything", serde_json::json!({})),
    });
    calls
}

#[test]
fn a_long_scripted_session_never_overflows_and_stays_in_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let (root, outside) = fixture(dir.path());
    let before = snapshot(&outside);
    let turns = 21;
    let mut replies = Vec::new();
    for t in 0..turns {
        replies.extend(turn_calls(t));
        replies.push(format!("Turn {t} is done: m{} tidied and the tests pass.", t % 8));
    }
    let mut script = Scripted::new(replies);
    // Forgetting down to 45% keeps the attended cells (and so the test's
    // time) low; what is forgotten is the same as with the defaults.
    let policy = DecachePolicy { at: 0.8, to: 0.45, ..DecachePolicy::default() };
    // The replies are scripted: a random-weight model with SmolLM2's
    // vocabulary evaluates the same tokens into the same 4096 cells.
    let mut a = agent(&common::tiny_smollm2(), &root, 4096, Limits::default(), true, policy);
    let mut ui = Recorder::default();
    for t in 0..turns {
        let end =
            a.turn(&format!("Turn {t}: tidy src/m{}.rs and run the tests.", t % 8), &mut script, &mut ui).unwrap();
        assert!(matches!(end, TurnEnd::Answered(_)), "turn {t}: {end:?}");
    }
    assert_eq!(script.remaining(), 0);
    let (s, c) = (&a.stats, &a.conv.stats);
    eprintln!(
        "{} tool calls ({} errors), {} steps, {} tokens seen through {} cells, {} decache events ({} tokens), max live {}",
        s.tool_calls, s.tool_errors, s.steps, c.tokens_seen, ui.cells, ui.decache.len(), c.tokens_decached, ui.max_live
    );
    let mut table: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for d in &ui.decache {
        *table.entry((d.2, d.1)).or_default() += d.0;
    }
    for ((kind, reason), n) in &table {
        eprintln!("  {kind:<16} {reason:<28} {n:>6}");
    }
    assert!(s.tool_calls >= 200, "{} tool calls", s.tool_calls);
    assert!(c.tokens_seen >= 50_000, "{} tokens", c.tokens_seen);
    assert!(ui.max_live <= ui.cells && ui.cells == 4096, "live {} of {}", ui.max_live, ui.cells);
    assert_eq!(ui.asked, 3, "one question each for run_command, edit_file and write_file, then 'always'");
    // The decaching was by meaning.
    let reasons: std::collections::BTreeSet<&str> = ui.decache.iter().map(|d| d.1).collect();
    assert!(!table.contains_key(&("system reminder", "oldest turn")), "a reminder outlived its newer copy");
    for r in ["stale file read", "passing log", "superseded reminder"] {
        assert!(reasons.contains(r), "no '{r}' among {reasons:?}");
    }
    // Every deletion is in the log, with its reason.
    let log = std::fs::read_to_string(a.log.as_ref().unwrap().path()).unwrap();
    let logged: Vec<Value> =
        log.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|v| v["type"] == "decache").collect();
    assert_eq!(logged.len(), ui.decache.len());
    for (v, (cells, reason, _)) in logged.iter().zip(&ui.decache) {
        assert_eq!((v["cells"].as_u64(), v["reason"].as_str()), (Some(*cells as u64), Some(*reason)));
    }
    // The calls that had to fail did, with a clear message, and nothing outside was touched.
    let failed: Vec<&(String, bool, String)> = ui.results.iter().filter(|r| !r.1).collect();
    assert_eq!(failed.len(), turns, "{failed:#?}");
    assert!(failed.iter().all(|r| r.2.starts_with("error: ")));
    assert_eq!(snapshot(&outside), before, "a file outside the folder changed");
    assert!(
        std::fs::read_to_string(root.join("src/m0.rs")).unwrap().contains("// edits: t16 t8 t0"),
        "the edits landed"
    );
}

#[test]
fn bad_tool_input_gets_a_clear_error_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = fixture(dir.path());
    std::fs::write(root.join("blob.bin"), [0x7f, b'E', b'L', b'F', 0, 1, 2, 0xff, 0]).unwrap();
    std::fs::write(
        root.join("huge.log"),
        "a line of a very large log file that nobody should read whole\n".repeat(8000),
    )
    .unwrap();
    let cases: Vec<(String, &str)> = vec![
        (call("read_file", serde_json::json!({"path": "src/nope.rs"})), "src/nope.rs: no such file or directory"),
        (call("read_file", serde_json::json!({"path": "blob.bin"})), "blob.bin is a binary file"),
        (call("read_file", serde_json::json!({"path": "huge.log"})), "read a part of it with start_line and end_line"),
        (call("read_file", serde_json::json!({"path": "src"})), "src is a directory, not a file; use list_dir"),
        (call("read_file", serde_json::json!({"path": "../outside/secret.txt"})), "outside the project folder"),
        (call("read_file", serde_json::json!({"path": "/etc/passwd"})), "outside the project folder"),
        (call("read_file", serde_json::json!({"path": "link/secret.txt"})), "outside the project folder"),
        (
            call("run_command", serde_json::json!({"command": "sleep 20", "timeout_secs": 1})),
            "[timed out after 1 s; the command was killed]",
        ),
        (
            call("run_command", serde_json::json!({"command": "yes 'many lines of output' | head -c 3000000"})),
            "cut to fit the context",
        ),
        (
            "<tool_call>\n{\"name\": \"grep\", \"arguments\": {\"pattern\": \"x\",}}\n</tool_call>".into(),
            "its body is not valid JSON",
        ),
        (call("launch_rockets", serde_json::json!({})), "unknown tool 'launch_rockets'; the tools are: read_file"),
        (call("read_file", serde_json::json!({"path": 42})), "argument path must be a string"),
        (call("grep", serde_json::json!({"pattern": "(unclosed"})), "bad regular expression"),
        (
            call("edit_file", serde_json::json!({"path": "src/m1.rs", "old_string": "pub fn", "new_string": "fn"})),
            "occurs 30 times",
        ),
    ];
    let mut replies: Vec<String> = cases.iter().map(|c| c.0.clone()).collect();
    replies.push("All checked.".into());
    let mut script = Scripted::new(replies);
    let limits = Limits { command_timeout: Duration::from_secs(5), ..Limits::default() };
    let mut a = agent(&common::tiny_smollm2(), &root, 4096, limits, false, DecachePolicy::default());
    // Hooks ride along: one that does not apply after each read, one before each command.
    a.hooks.hooks = vec![
        Hook {
            when: When::After,
            tool: "read_file".into(),
            command: "echo \"lint: $DECACHE_TOOL\"; exit 3".into(),
            timeout_secs: None,
        },
        Hook { when: When::Before, tool: "run_command".into(), command: "echo pre-check".into(), timeout_secs: None },
    ];
    let mut ui = Recorder::default();
    let end = a.turn("Check the tools.", &mut script, &mut ui).unwrap();
    assert_eq!(end, TurnEnd::Answered("All checked.".into()));
    assert_eq!(ui.results.len(), cases.len());
    for ((_, want), (name, ok, text)) in cases.iter().zip(&ui.results) {
        eprintln!("{name}: {}", text.lines().last().unwrap_or(""));
        assert!(text.contains(want), "{name}: wanted {want:?} in {text}");
        if name != "run_command" {
            assert!(!ok && text.starts_with("error: "), "{name} should fail: {text}");
        }
    }
    let (reads, commands) = (cases.iter().filter(|c| c.0.contains("\"read_file\"")).count(), 2);
    assert_eq!(ui.hooks.iter().filter(|h| !h.0 && h.1 == "exit 3").count(), reads, "{:?}", ui.hooks);
    assert_eq!(ui.hooks.iter().filter(|h| h.0).count(), commands, "{:?}", ui.hooks);
    let hook_segments: Vec<_> =
        a.conv.segments.iter().filter(|s| matches!(s.kind, SegmentKind::HookOutput { .. })).collect();
    assert_eq!(hook_segments.len(), reads + commands);
    assert!(hook_segments.iter().filter(|s| s.kind == SegmentKind::HookOutput { applied: false }).count() == reads);
    let big = &ui.results[8].2;
    assert!(big.len() < 40_000, "the huge output was capped ({} bytes)", big.len());
}

/// The model forgets on its own: a scripted model reads a file, runs the
/// tests, then calls `forget` on the read (result 1) with a note. The read's
/// cells are gone from the cache, the note is in it, the deletion is a
/// decache event with reason "forgotten by the model" in the session log,
/// bad forget calls get a clear tool error, and the session goes on.
#[test]
fn the_model_forgets_a_result_and_keeps_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = fixture(dir.path());
    let note = "m3.rs has f3_0..f3_29, nothing to change there";
    let replies = vec![
        call("read_file", serde_json::json!({"path": "src/m3.rs"})),
        call("run_command", serde_json::json!({"command": "sh test.sh"})),
        call("forget", serde_json::json!({"result": 1, "note": note})),
        call("forget", serde_json::json!({"result": 9})),
        call("forget", serde_json::json!({"result": 1})),
        call("forget", serde_json::json!({"path": "src/m3.rs", "thinking": true})),
        call("read_file", serde_json::json!({"path": "src/m4.rs", "start_line": 1, "end_line": 3})),
        "Done: m3 needs nothing.".to_string(),
    ];
    let mut script = Scripted::new(replies);
    let mut a = agent(&common::tiny_smollm2(), &root, 4096, Limits::default(), true, DecachePolicy::default());
    let mut ui = Recorder::default();
    let end = a.turn("Look at m3 and run the tests.", &mut script, &mut ui).unwrap();
    assert_eq!(end, TurnEnd::Answered("Done: m3 needs nothing.".into()));

    // The read is gone from the cache: its segment fully removed, its cells freed.
    let read = a
        .conv
        .segments
        .iter()
        .find(|s| matches!(&s.kind, SegmentKind::FileRead { path } if path == "src/m3.rs"))
        .expect("the read was recorded");
    assert!(read.fully_removed(), "the read's tokens are all forgotten: {read:?}");
    let by_model: Vec<_> = ui.decache.iter().filter(|d| d.1 == "forgotten by the model").collect();
    assert!(!by_model.is_empty() && by_model.iter().all(|d| d.0 > 0), "{:?}", ui.decache);
    let forgotten: usize = by_model.iter().map(|d| d.0).sum();
    assert!(forgotten >= (read.p1 - read.p0) as usize, "{forgotten} cells for a read of {} tokens", read.p1 - read.p0);
    // The note is in: a live segment of its own, in the conversation.
    let kept = a.conv.segments.iter().find(|s| s.kind == SegmentKind::Note).expect("a note segment");
    assert_eq!(kept.live(), (kept.p1 - kept.p0) as usize, "the note is live");
    assert!(a.conv.messages().iter().any(|m| m.content.contains(note)));
    // The results the model saw, and the bad calls' errors.
    let texts: Vec<&str> = ui.results.iter().map(|r| r.2.as_str()).collect();
    assert!(texts[2].starts_with("Forgot result 1 (") && texts[2].contains(note), "{}", texts[2]);
    assert!(texts[3].contains("there is no result 9: the results so far are numbered 1 to 3"), "{}", texts[3]);
    assert!(texts[4].contains("result 1: nothing left to forget"), "{}", texts[4]);
    assert!(texts[5].contains("give exactly one of result"), "{}", texts[5]);
    assert!(ui.results[6].1, "the session goes on: {:?}", ui.results[6]);
    // Each result was numbered in the context.
    assert!(a.conv.messages().iter().any(|m| m.role == "tool" && m.content.starts_with("[result 2]\n")));
    // The session log has the event with its reason.
    let log = std::fs::read_to_string(a.log.as_ref().unwrap().path()).unwrap();
    assert!(
        log.lines().any(|l| l.contains("\"type\":\"decache\"") && l.contains("\"reason\":\"forgotten by the model\"")),
        "{log}"
    );
}

#[test]
fn a_short_session_with_the_real_model_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = fixture(dir.path());
    let mut a = agent(&common::smollm2(), &root, 4096, Limits::default(), true, DecachePolicy::default());
    a.cfg.max_steps = 3;
    let mut model = ModelResponder {
        opts: GenerateOptions { n_predict: Some(48), sampling: SamplingParams::greedy(), ..GenerateOptions::default() },
    };
    let mut ui = Recorder { deny: true, ..Recorder::default() };
    for q in ["What does src/m1.rs contain? Use read_file.", "Run the tests with run_command: sh test.sh"] {
        let end = a.turn(q, &mut model, &mut ui).unwrap();
        assert!(matches!(end, TurnEnd::Answered(_) | TurnEnd::StepLimit), "{end:?}");
    }
    eprintln!("real model: {} steps, {} tool calls, {} results", a.stats.steps, a.stats.tool_calls, ui.results.len());
    assert!(a.stats.steps >= 2);
    let log = std::fs::read_to_string(a.log.as_ref().unwrap().path()).unwrap();
    let replies = log.lines().filter(|l| l.contains("\"role\":\"assistant\"")).count();
    assert_eq!(replies, a.stats.steps, "every reply is in the session log");
}
