//! `decache serve --script`: a scripted model that real clients can be
//! driven with (replies and tool calls from a file, every token through the
//! cache); `serve -n`, the cap on generated tokens; and the prompt cache,
//! which keeps the main conversation's chain when side requests with other
//! system prompts pass through its slot. All on the tiny random-weight
//! model with SmolLM2's vocabulary: the text comes from the script.
mod common;
#[path = "common/http.rs"]
mod http;
use http::Server;
use serde_json::{json, Value};

fn tiny() -> String {
    common::tiny_smollm2().display().to_string()
}

fn write_script(dir: &std::path::Path, text: &str) -> String {
    let p = dir.join("script.txt");
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const SCRIPT: &str = r#"@when no-tools
@keep
Fix the counter
---
@when tools
I will read the file first.
<tool_call>{"name": "read_file", "arguments": {"path": "notes.txt"}}</tool_call>
---
@when tools
@when contains count = 1
<tool_call>{"name": "edit_file", "arguments": {"path": "notes.txt", "old": "count = 1", "new": "count = 2"}}</tool_call>
---
@when tools
The file now says count = 2.
"#;

fn tools() -> Value {
    let f = |name: &str| json!({"type": "function", "function": {"name": name, "parameters": {"type": "object"}}});
    json!([f("read_file"), f("edit_file")])
}

#[test]
fn a_scripted_server_answers_tool_loops_and_side_requests_in_both_apis() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), SCRIPT);
    let s = Server::start(&["-m", &tiny(), "-c", "2048", "-t", "2", "--script", &script]);
    let sys = json!({"role": "system", "content": "You are a coding agent."});
    let ask = json!({"role": "user", "content": "Change the count in notes.txt to 2."});
    // A side request (no tools) gets the @keep reply and uses nothing up.
    let (st, v) = s.post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "Title?"}]}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Fix the counter");
    // The main loop: a call with text before it.
    let (st, v) = s.post("/v1/chat/completions", &json!({"messages": [sys, ask], "tools": tools()}));
    assert_eq!(st, 200, "{v}");
    let m = &v["choices"][0]["message"];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    assert_eq!(m["tool_calls"][0]["function"]["name"], "read_file");
    assert_eq!(m["content"], "I will read the file first.");
    let gen = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(gen > 10, "the scripted tokens were generated through the model: {v}");
    let call = m["tool_calls"][0].clone();
    // The tool result, through Anthropic's API: the reply waiting for "count = 1" comes.
    let body = json!({
        "model": "claude-sonnet-4-5", "max_tokens": 1000, "system": "You are a coding agent.",
        "tools": [{"name": "read_file", "input_schema": {"type": "object"}}, {"name": "edit_file", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": "Change the count in notes.txt to 2."},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "read_file", "input": {"path": "notes.txt"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "count = 1"}]}
        ]
    });
    let (st, v) = s.post("/v1/messages", &body);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["stop_reason"], "tool_use", "{v}");
    assert_eq!(v["content"][0]["name"], "edit_file");
    assert_eq!(v["content"][0]["input"]["new"], "count = 2");
    // The last reply; the script is then used up, and says so.
    let (st, v) = s.post(
        "/v1/chat/completions",
        &json!({"messages": [sys, ask, {"role": "assistant", "tool_calls": [call]}, {"role": "tool", "content": "edited"}], "tools": tools()}),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "The file now says count = 2.");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let (_, v) = s.post("/v1/chat/completions", &json!({"messages": [sys, ask], "tools": tools()}));
    assert_eq!(v["choices"][0]["message"]["content"], "(the script has no more replies)");
}

#[test]
fn a_bad_script_is_refused_at_start_naming_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "fine\n---\n@when sometimes\nno");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_decache"))
        .args(["serve", "--port", "0", "-m", &tiny(), "--script", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("line 3") && err.contains("@when sometimes"), "{err}");
}

#[test]
fn serve_n_caps_what_any_request_generates() {
    let dir = tempfile::tempdir().unwrap();
    let long = "one two three four five six seven eight nine ten ".repeat(20);
    let script = write_script(dir.path(), &format!("@keep\n{long}"));
    let s = Server::start(&["-m", &tiny(), "-c", "2048", "-t", "2", "--script", &script, "-n", "16"]);
    let msgs = json!([{"role": "user", "content": "Count."}]);
    for max in [json!(null), json!(32000)] {
        let (st, v) = s.post("/v1/chat/completions", &json!({"messages": msgs, "max_tokens": max}));
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["usage"]["completion_tokens"], 16, "{v}");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }
    // A request asking for fewer gets fewer.
    let (_, v) = s.post("/v1/chat/completions", &json!({"messages": msgs, "max_tokens": 5}));
    assert_eq!(v["usage"]["completion_tokens"], 5, "{v}");
    // Without -n the whole reply comes (-1: no cap).
    let s = Server::start(&["-m", &tiny(), "-c", "2048", "-t", "2", "--script", &script, "-n", "-1"]);
    let (_, v) = s.post("/v1/chat/completions", &json!({"messages": msgs}));
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 100, "{v}");
}

/// A long main conversation, then a title request and a sub-agent request
/// with other system prompts through the same (single, default) slot, then
/// the main conversation's next turn: with the default flags it reuses its
/// cached tokens, restored from the prompt cache.
#[test]
fn side_requests_do_not_evict_the_main_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("t");
    let script = write_script(dir.path(), "@keep\nOK.");
    let s = Server::start(&[
        "-m",
        &tiny(),
        "-c",
        "16384",
        "-t",
        "2",
        "--script",
        &script,
        "--transcripts",
        tdir.to_str().unwrap(),
    ]);
    let file =
        |i: usize| format!("File src/mod{i}.rs:\n{}", format!("fn f{i}(x: u32) -> u32 {{ x * {i} + 1 }}\n").repeat(12));
    let sys = json!({"role": "system", "content": "You are the main coding agent. Use the tools.\n".repeat(40)});
    let mut msgs = vec![sys];
    for i in 0..24 {
        msgs.push(json!({"role": "user", "content": format!("Read module {i}.")}));
        msgs.push(json!({"role": "assistant", "content": format!("Here is module {i}.\n{}", file(i))}));
    }
    msgs.push(json!({"role": "user", "content": "Now summarise the modules."}));
    let (st, v) = s.post("/v1/chat/completions", &json!({"messages": msgs}));
    assert_eq!(st, 200, "{v}");
    let main_prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(main_prompt >= 8000, "the main conversation is at least 8k tokens: {main_prompt}");
    // Side requests with other system prompts.
    let title = json!({"messages": [
        {"role": "system", "content": "Generate a short title for this conversation."},
        {"role": "user", "content": "Now summarise the modules."}]});
    let sub = json!({"messages": [
        {"role": "system", "content": "You are a sub-agent that searches the code base. ".repeat(30)},
        {"role": "user", "content": "Find where f3 is called."}]});
    for body in [&title, &sub] {
        let (st, v) = s.post("/v1/chat/completions", body);
        assert_eq!(st, 200, "{v}");
        assert!(v["decache"]["tokens_reused"].as_u64().unwrap_or(0) < 64, "{v}");
    }
    // The main conversation goes on.
    msgs.push(json!({"role": "assistant", "content": "OK."}));
    msgs.push(json!({"role": "user", "content": "And module 3?"}));
    let (st, v) = s.post("/v1/chat/completions", &json!({"messages": msgs}));
    assert_eq!(st, 200, "{v}");
    let d = &v["decache"];
    let reused = d["tokens_reused"].as_u64().unwrap();
    eprintln!("main turn after side requests: {d} of {} prompt tokens", v["usage"]["prompt_tokens"]);
    assert_eq!(d["from"], "prompt_cache", "{v}");
    assert!(reused * 100 >= main_prompt * 95, "reused {reused} of the {main_prompt} cached tokens");
    let (_, slots) = s.get("/slots");
    assert!(slots.contains("\"last_from\":\"prompt_cache\""), "{slots}");
    let (_, m) = s.get("/metrics");
    let metric = |name: &str| -> f64 {
        let line = m.lines().find(|l| l.starts_with(&format!("decache:{name} "))).unwrap_or_else(|| panic!("{m}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(metric("prompt_cache_saves_total") >= 2.0 && metric("prompt_cache_restores_total") == 1.0, "{m}");
    assert!(metric("prompt_cache_chains") >= 1.0 && metric("prompt_cache_bytes") > 0.0, "{m}");
    drop(s);
    // The slot's transcript saved and restored the chain; a replay keeps
    // its own copy and follows, the scripted replies fed back.
    let files: Vec<_> = std::fs::read_dir(&tdir).unwrap().flatten().map(|e| e.path()).collect();
    let t = std::fs::read_to_string(&files[0]).unwrap();
    let restored = t.lines().any(|l| l.contains("\"type\":\"restore\"") && l.contains("\"tag\":"));
    assert!(t.contains("\"type\":\"saved\"") && restored, "saved and restored");
    assert!(t.contains("\"forced\":true"), "the scripted replies are marked");
    let (ok, out) = http::replay(&files[0]);
    assert!(ok && out.contains("4 generations") && out.contains("all bit-exact"), "{out}");
}

/// With the prompt cache off (`--cache-ram 0`) the same side request costs
/// the main conversation its cache: what the default saves.
#[test]
fn without_the_prompt_cache_a_side_request_evicts_the_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let script = write_script(dir.path(), "@keep\nOK.");
    let s = Server::start(&["-m", &tiny(), "-c", "4096", "-t", "2", "--script", &script, "--cache-ram", "0"]);
    let sys = json!({"role": "system", "content": "You are the main coding agent.\n".repeat(60)});
    let mut msgs = vec![sys, json!({"role": "user", "content": "Start."})];
    let (_, v) = s.post("/v1/chat/completions", &json!({"messages": msgs}));
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 300, "{v}");
    let (st, _) = s.post(
        "/v1/chat/completions",
        &json!({"messages": [{"role": "system", "content": "Title."}, {"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(st, 200);
    msgs.push(json!({"role": "assistant", "content": "OK."}));
    msgs.push(json!({"role": "user", "content": "Go on."}));
    let (_, v) = s.post("/v1/chat/completions", &json!({"messages": msgs}));
    assert_eq!(v["decache"]["from"], "slot", "{v}");
    assert!(v["decache"]["tokens_reused"].as_u64().unwrap() < 64, "evicted: {v}");
}
