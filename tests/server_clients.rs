//! Real clients against `decache serve`: the official `openai` Python
//! package (installed by `make pyenv`, which `make test` runs) drives a chat,
//! a streamed chat with usage, a text completion and an error, and the
//! Responses API (`client.responses`: plain, streamed, continued, function
//! calls); the official `anthropic` package drives /v1/messages the same way.
mod common;
#[path = "common/http.rs"]
mod http;
use std::path::Path;
use std::process::Command;

fn python() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/python");
    assert!(p.exists(), "{} is missing: run `make pyenv` (make test does)", p.display());
    p.display().to_string()
}

fn run_client(script: &str, base: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients").join(script);
    let out = Command::new(python()).arg(&script).arg(base).output().expect("run python");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{} failed:\n{stdout}\n{stderr}", script.display());
    stdout.into_owned()
}

#[test]
fn the_openai_python_package_works() {
    let model = common::smollm2().display().to_string();
    let s = http::Server::start(&["-m", &model, "-c", "1024", "-t", "2", "--api-key", "test-key"]);
    let out = run_client("openai_chat.py", &format!("http://{}", s.addr));
    eprintln!("openai client: {out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["streamed_chunks"].as_u64().unwrap() > 0);
}

#[test]
fn the_openai_python_package_speaks_the_responses_api() {
    let model = common::smollm2().display().to_string();
    let s = http::Server::start(&["-m", &model, "-c", "1024", "-t", "2", "--api-key", "test-key"]);
    let out = run_client("openai_responses.py", &format!("http://{}", s.addr));
    eprintln!("openai responses client: {out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["streamed_deltas"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["tool_call"], serde_json::json!({"city": "Berlin"}), "{v}");
}

#[test]
fn the_anthropic_python_package_works() {
    let model = common::smollm2().display().to_string();
    let s = http::Server::start(&["-m", &model, "-c", "1024", "-t", "2", "--api-key", "test-key", "--temp", "0"]);
    let out = run_client("anthropic_messages.py", &format!("http://{}", s.addr));
    eprintln!("anthropic client: {out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["cache_read"].as_u64().unwrap() > 0);
}

/// ChatML whose generation prompt opens a thinking block (see server_http).
const THINKING: &str = "{# past turns keep their <think>...</think> #}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}";

#[test]
fn the_anthropic_package_reads_thinking_blocks_and_applied_edits() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("thinking.jinja");
    std::fs::write(&file, THINKING).unwrap();
    let model = common::tiny_smollm2().display().to_string();
    let s =
        http::Server::start(&["-m", &model, "-c", "1024", "-t", "2", "--chat-template-file", file.to_str().unwrap()]);
    let out = run_client("anthropic_thinking.py", &format!("http://{}", s.addr));
    eprintln!("anthropic client (thinking): {out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["edits"].as_array().map(Vec::len), Some(2));
}

/// The `anthropic` package sends content blocks annotated `"decache": true`
/// and `"decached_from": 2`: the server leaves them out of the prompt from
/// then on and removes their cached tokens in place, reusing the rest.
#[test]
fn the_anthropic_package_keeps_annotated_blocks_out_of_the_cache() {
    let model = common::tiny_smollm2().display().to_string();
    let s = http::Server::start(&["-m", &model, "-c", "1024", "-t", "2", "--api-key", "test-key", "--temp", "0"]);
    let out = run_client("anthropic_decache_annotation.py", &format!("http://{}", s.addr));
    eprintln!("anthropic client (decache annotation): {out}");
    annotated_parts_left_the_cache(&out);
}

/// Qwen3.5's XML tool calls and Gemma 4's `<|tool_call>` form, written by a
/// scripted model, reach the official `openai` package as structured calls
/// (the second one streamed, with no call text in the content).
#[test]
fn the_openai_package_reads_qwen35_and_gemma4_tool_calls() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.txt");
    std::fs::write(
        &script,
        "@when tools\nLet me check.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n\
         <parameter=days>\n2\n</parameter>\n</function>\n</tool_call>\n---\n@when tools\n\
         <|tool_call>call:get_weather{city:<|\"|>Paris<|\"|>,days:3}<tool_call|>\n",
    )
    .unwrap();
    let model = common::tiny_smollm2().display().to_string();
    let s = http::Server::start(&["-m", &model, "-c", "2048", "-t", "2", "--script", script.to_str().unwrap()]);
    let out = run_client("openai_tool_forms.py", &format!("http://{}", s.addr));
    eprintln!("openai client (tool forms): {out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["xml"]["name"], "get_weather", "{v}");
    assert_eq!(v["xml"]["arguments"], serde_json::json!({"city": "Paris", "days": 2}), "{v}");
    assert_eq!(v["xml"]["content"], "Let me check.", "{v}");
    assert_eq!(v["gemma4"]["name"], "get_weather", "{v}");
    assert_eq!(v["gemma4"]["arguments"], serde_json::json!({"city": "Paris", "days": 3}), "{v}");
    assert_eq!(v["gemma4"]["content"], "", "{v}");
}

/// The `openai` package sends a full history with one message annotated
/// `"decache": true`: the server leaves it out and removes its cached
/// tokens in place, reusing the rest (a subconscious hit).
#[test]
fn the_openai_package_keeps_an_annotated_message_out_of_the_cache() {
    let model = common::tiny_smollm2().display().to_string();
    let s = http::Server::start(&["-m", &model, "-c", "1024", "-t", "2"]);
    let out = run_client("openai_decache_annotation.py", &format!("http://{}", s.addr));
    eprintln!("openai client (decache annotation): {out}");
    annotated_parts_left_the_cache(&out);
}

/// What the annotation clients print: `"decache": true` took the part out of
/// the prompt and its cached tokens out in place (the rest reused, a
/// subconscious hit); `"decached_from": 2` kept the other part in turn 1's
/// prompt only, and removed it in place in turn 2.
fn annotated_parts_left_the_cache(out: &str) {
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let (before, after) = (v["prompt_before"].as_u64().unwrap(), v["prompt_after"].as_u64().unwrap());
    assert!(after + 100 < before, "the annotated part left the prompt: {v}");
    assert_eq!(v["hit"], "subconscious", "{v}");
    assert!(v["removed"].as_u64().unwrap() >= 100 && v["reused"].as_u64().unwrap() > 0, "{v}");
    let (t1, t2) = (v["from_turn1"].as_u64().unwrap(), v["from_turn2"].as_u64().unwrap());
    assert!(t1 > 150 && t2 + 100 < t1, "the replayed part is in turn 1 only: {v}");
    assert!(v["from_removed"].as_u64().unwrap() >= 100, "{v}");
}
