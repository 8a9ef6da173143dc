//! gpt-oss's harmony format end to end: a tiny random-weight model whose
//! chat template speaks harmony and whose vocabulary holds harmony's special
//! tokens (`<|call|>` and `<|return|>` end the turn), served with a script
//! whose replies are harmony completions (every token through the model).
//! The analysis comes back as reasoning, calls as tool calls, in the OpenAI,
//! Anthropic and Responses APIs, whole and streamed; tools and earlier calls
//! reach the template in its own fields.
mod common;
#[path = "common/http.rs"]
mod http;
use common::gguf_writer::{tiny, tiny_llama, tiny_vocab, Rng, Value as Gv};
use http::{request, sse_data, Server};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A short harmony template: tools in a developer message, an earlier call
/// as a `to=functions.NAME` message, turns as `<|start|>ROLE<|message|>…<|end|>`.
const TEMPLATE: &str = "\
{%- if tools -%}
<|start|>developer<|message|># Tools
namespace functions {
{%- for t in tools %}
type {{ t.function.name }} = (_: {{ t.function.parameters | tojson }}) => any;
{%- endfor %}
} // namespace functions<|end|>
{%- endif -%}
{%- for m in messages -%}
{%- if m.role == 'assistant' and m.tool_calls -%}
<|start|>assistant to=functions.{{ m.tool_calls[0].function.name }}<|channel|>commentary json<|message|>{{ m.tool_calls[0].function.arguments | tojson }}<|call|>
{%- elif m.role == 'assistant' -%}
<|start|>assistant<|channel|>final<|message|>{{ m.content }}<|end|>
{%- elif m.role == 'tool' -%}
<|start|>functions.result to=assistant<|channel|>commentary<|message|>{{ m.content }}<|end|>
{%- else -%}
<|start|>{{ m.role }}<|message|>{{ m.content }}<|end|>
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}<|start|>assistant{%- endif -%}";

/// Harmony's special tokens, added to the tiny vocabulary as control tokens.
const SPECIALS: &[&str] =
    &["<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|call|>", "<|return|>", "<|constrain|>"];

const THOUGHT: &str = "The user wants the weather in Paris. I should call get_weather.";
const SCRIPT: &str = r#"@when tools
@keep
<|channel|>analysis<|message|>The user wants the weather in Paris. I should call get_weather.<|end|><|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{"city": "Paris", "days": 2}<|call|>
---
@when no-tools
@keep
<|channel|>analysis<|message|>A greeting.<|end|><|start|>assistant<|channel|>final<|message|>Hello! How can I help?<|return|>
"#;

/// The tiny llama with harmony's tokens and template (written once per test binary).
fn model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny-harmony.gguf");
    let mut g = tiny_llama();
    let (mut tokens, mut types, _) = tiny_vocab();
    for s in SPECIALS {
        tokens.push(s.to_string());
        types.push(3);
    }
    g.set("tokenizer.ggml.tokens", Gv::strs(&tokens))
        .set("tokenizer.ggml.token_type", Gv::i32s(&types))
        .set("llama.context_length", Gv::U32(4096))
        .set("tokenizer.chat_template", Gv::str(TEMPLATE));
    g.remove_tensor("token_embd.weight");
    g.tensor_f32("token_embd.weight", &[tiny::N_EMBD, tokens.len() as u64], &mut Rng::new(0x4a7));
    g.write(&path);
    path
}

fn serve(dir: &Path) -> Server {
    let script = dir.join("script.txt");
    std::fs::write(&script, SCRIPT).unwrap();
    let m = model(dir);
    Server::start(&["-m", m.to_str().unwrap(), "-c", "2048", "-t", "2", "--script", script.to_str().unwrap()])
}

fn weather_tool() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "The forecast",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}}}})
}

fn ask() -> Value {
    json!({"role": "user", "content": "What is the weather in Paris?"})
}

/// The JSON payloads of a streamed response.
fn stream(s: &Server, path: &str, body: &Value) -> Vec<Value> {
    let r = request(&s.addr, "POST", path, &[("content-type", "application/json")], body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    sse_data(&r.body).iter().filter(|d| *d != "[DONE]").map(|d| serde_json::from_str(d).unwrap()).collect()
}

#[test]
fn harmony_replies_come_back_as_reasoning_text_and_tool_calls() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path());

    // OpenAI, whole: the analysis as reasoning_content, the call parsed.
    let body = json!({"messages": [ask()], "tools": [weather_tool()]});
    let (st, v) = s.post("/v1/chat/completions", &body);
    assert_eq!(st, 200, "{v}");
    let m = &v["choices"][0]["message"];
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    assert_eq!(m["reasoning_content"], THOUGHT, "{v}");
    assert_eq!(m["content"], Value::Null, "no text besides the call: {v}");
    assert_eq!(m["tool_calls"][0]["function"]["name"], "get_weather");
    let args: Value = serde_json::from_str(m["tool_calls"][0]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris", "days": 2}));
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 30, "the reply went through the model: {v}");

    // OpenAI, streamed: reasoning deltas, no channel markers as content, the call at the end.
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let chunks = stream(&s, "/v1/chat/completions", &sbody);
    let delta = |k: &str| -> String {
        chunks.iter().filter_map(|c| c["choices"][0]["delta"][k].as_str()).collect::<Vec<_>>().concat()
    };
    assert_eq!(delta("reasoning_content"), THOUGHT);
    assert_eq!(delta("content"), "", "{chunks:?}");
    let call =
        chunks.iter().find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0).cloned()).expect("a call delta");
    assert_eq!(call["function"]["name"], "get_weather");
    assert_eq!(serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(), args);
    assert_eq!(chunks.iter().rev().find_map(|c| c["choices"][0]["finish_reason"].as_str()), Some("tool_calls"));

    // Without tools: the final channel is the content.
    let (st, v) = s.post("/v1/chat/completions", &json!({"messages": [{"role": "user", "content": "Hi"}]}));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello! How can I help?", "{v}");
    assert_eq!(v["choices"][0]["message"]["reasoning_content"], "A greeting.");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");

    // Anthropic with thinking: a thinking block and a tool_use block.
    let tool = json!({"name": "get_weather", "description": "The forecast", "input_schema": weather_tool()["function"]["parameters"]});
    let abody = json!({"model": "claude-sonnet-4-5", "max_tokens": 400, "tools": [tool], "messages": [ask()],
        "thinking": {"type": "enabled", "budget_tokens": 1024}});
    let (st, v) = s.post("/v1/messages", &abody);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["stop_reason"], "tool_use", "{v}");
    let kinds: Vec<&str> = v["content"].as_array().unwrap().iter().map(|b| b["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["thinking", "tool_use"], "{v}");
    assert_eq!(v["content"][0]["thinking"], THOUGHT);
    assert_eq!((&v["content"][1]["name"], &v["content"][1]["input"]), (&json!("get_weather"), &args));
    // Streamed: thinking deltas, then the tool_use block's input.
    let mut sbody = abody.clone();
    sbody["stream"] = json!(true);
    let events = stream(&s, "/v1/messages", &sbody);
    let deltas = |k: &str| -> String {
        events.iter().filter(|e| e["type"] == "content_block_delta").filter_map(|e| e["delta"][k].as_str()).collect()
    };
    assert_eq!(deltas("thinking"), THOUGHT);
    assert_eq!(deltas("text"), "", "{events:?}");
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "content_block_start")
        .map(|e| e["content_block"]["type"].as_str().unwrap())
        .collect();
    assert_eq!(started, ["thinking", "tool_use"], "{events:?}");
    assert_eq!(serde_json::from_str::<Value>(&deltas("partial_json")).unwrap(), args);
    // Thinking not asked for: the analysis is not shown, as text or otherwise.
    let mut plain = abody.clone();
    plain.as_object_mut().unwrap().remove("thinking");
    let (_, v) = s.post("/v1/messages", &plain);
    assert_eq!(
        v["content"],
        json!([{"type": "tool_use", "id": v["content"][0]["id"], "name": "get_weather", "input": args}])
    );

    // Responses: a reasoning item and a function_call item, whole and streamed.
    let rbody = json!({"input": "What is the weather in Paris?", "tools": [{"type": "function", "name": "get_weather",
        "parameters": weather_tool()["function"]["parameters"]}], "store": false});
    let (st, v) = s.post("/v1/responses", &rbody);
    assert_eq!(st, 200, "{v}");
    let kinds: Vec<&str> = v["output"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["reasoning", "function_call"], "{v}");
    assert_eq!(v["output"][0]["content"][0]["text"], THOUGHT);
    assert_eq!(serde_json::from_str::<Value>(v["output"][1]["arguments"].as_str().unwrap()).unwrap(), args);
    let mut sbody = rbody.clone();
    sbody["stream"] = json!(true);
    let events = stream(&s, "/v1/responses", &sbody);
    let reasoning: String = events
        .iter()
        .filter(|e| e["type"] == "response.reasoning_text.delta")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(reasoning, THOUGHT);
    let done = events.iter().find(|e| e["type"] == "response.completed").expect("completed");
    assert_eq!(done["response"]["output"][1]["name"], "get_weather", "{done}");
}

#[test]
fn tools_and_earlier_calls_reach_a_harmony_template_in_its_own_fields() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve(dir.path());
    let call = json!({"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}});
    let body = json!({"messages": [ask(), {"role": "assistant", "content": null, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 24 C"}], "tools": [weather_tool()]});
    let (st, v) = s.post("/apply-template", &body);
    assert_eq!(st, 200, "{v}");
    let prompt = v["prompt"].as_str().unwrap();
    assert!(prompt.starts_with("<|start|>developer<|message|># Tools"), "the template renders the tools: {prompt}");
    assert!(prompt.contains("type get_weather = (_: {\"properties\""), "{prompt}");
    assert!(!prompt.contains("<tool_call>") && !prompt.contains("<tools>"), "no Hermes offer or call text: {prompt}");
    assert!(
        prompt.contains("<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>{\"city\": \"Paris\"}<|call|><|start|>functions.result to=assistant<|channel|>commentary<|message|>sunny, 24 C<|end|>"),
        "{prompt}"
    );
    assert!(prompt.ends_with("<|start|>assistant"), "{prompt}");
    // The conversation goes on: the next reply is parsed as before.
    let (st, v) = s.post("/v1/chat/completions", &body);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "get_weather", "{v}");
}

#[test]
fn the_agent_takes_its_calls_from_harmony_and_shows_only_the_answer_on_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("proj");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("notes.txt"), "count = 1\n").unwrap();
    let script = dir.path().join("agent.txt");
    std::fs::write(
        &script,
        "<|channel|>analysis<|message|>Read the notes first.<|end|><|start|>assistant<|channel|>commentary to=functions.read_file <|constrain|>json<|message|>{\"path\": \"notes.txt\"}<|call|>\n\
         ---\n\
         @when contains count = 1\n\
         <|channel|>analysis<|message|>They say one.<|end|><|start|>assistant<|channel|>final<|message|>The notes say count = 1.<|return|>\n",
    )
    .unwrap();
    let m = model(dir.path());
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_decache"))
        .args(["agent", root.to_str().unwrap(), "-m", m.to_str().unwrap(), "-c", "4096", "-t", "2", "--no-log"])
        .args(["--script", script.to_str().unwrap(), "-p", "What do the notes say?"])
        .output()
        .unwrap();
    let (out, err) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{out}{err}");
    assert!(err.contains("read_file(path=notes.txt)"), "the harmony call ran: {err}");
    assert_eq!(out.trim(), "The notes say count = 1.", "stdout holds the answer alone; stderr: {err}");
    assert!(err.contains("They say one.") && err.contains("Read the notes first."), "the analysis on stderr: {err}");
}
