//! OpenAI's Responses API (`POST /v1/responses`) over real HTTP: text and
//! item input and the prompt they render to, the response object and its
//! usage, the named stream events in order, `previous_response_id`
//! continuing a stored response from the cache, tool types that are skipped,
//! function calls coming back as items, and bad bodies answered with 400s
//! naming the field. The protocol tests run on the random-weight model with
//! SmolLM2's vocabulary (its replies are noise, but its tokens are
//! SmolLM2's); the function-call test needs the real model.
mod common;
#[path = "common/http.rs"]
mod http;
use http::{request, Server};
use serde_json::{json, Value};

fn tiny() -> String {
    common::tiny_smollm2().display().to_string()
}

/// The named events of a server-sent event stream: (event name, data).
fn events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter_map(|block| {
            let mut name = String::new();
            let mut data = String::new();
            for l in block.lines() {
                if let Some(n) = l.strip_prefix("event:") {
                    name = n.trim().to_string();
                } else if let Some(d) = l.strip_prefix("data:") {
                    data.push_str(d.strip_prefix(' ').unwrap_or(d));
                }
            }
            (!data.is_empty())
                .then(|| (name, serde_json::from_str(&data).unwrap_or_else(|e| panic!("not JSON ({e}): {data}"))))
        })
        .collect()
}

fn stream(s: &Server, body: &Value) -> Vec<(String, Value)> {
    let r =
        request(&s.addr, "POST", "/v1/responses", &[("content-type", "application/json")], body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.to_ascii_lowercase().contains("text/event-stream"), "{}", r.headers);
    assert!(!r.body.contains("[DONE]"), "the Responses stream ends with response.completed, not [DONE]");
    events(&r.body)
}

fn respond(s: &Server, body: &Value) -> Value {
    let (status, v) = s.post("/v1/responses", body);
    assert_eq!(status, 200, "{v}");
    v
}

fn prompt(s: &Server, body: &Value) -> String {
    let (status, v) = s.post("/apply-template", body);
    assert_eq!(status, 200, "{v}");
    v["prompt"].as_str().unwrap().to_string()
}

/// The response object's invariants: ids, status and its details, output
/// items and `output_text`, usage adding up, the decache object.
fn check_response(v: &Value, max_output: u64) {
    assert_eq!(v["object"], "response", "{v}");
    assert!(v["id"].as_str().unwrap().starts_with("resp_"), "{v}");
    assert!(v["created_at"].as_u64().unwrap() > 1_600_000_000, "{v}");
    let u = &v["usage"];
    let (input, output) = (u["input_tokens"].as_u64().unwrap(), u["output_tokens"].as_u64().unwrap());
    assert!(input > 0 && output > 0, "{u}");
    assert_eq!(u["total_tokens"].as_u64(), Some(input + output), "{u}");
    assert!(u["input_tokens_details"]["cached_tokens"].as_u64().unwrap() < input, "{u}");
    assert_eq!(u["output_tokens_details"]["reasoning_tokens"], 0, "{u}");
    match v["status"].as_str() {
        Some("incomplete") => {
            assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens", "{v}");
            assert!(output == max_output || v["decache"]["context_full"] == true, "{v}");
        }
        Some("completed") => {
            assert!(v["incomplete_details"].is_null(), "{v}");
            assert!(
                output <= max_output || v["output"].as_array().unwrap().iter().any(|i| i["type"] == "function_call")
            );
        }
        other => panic!("status {other:?}: {v}"),
    }
    let text: String = v["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| {
            assert_eq!(
                (i["role"].as_str(), i["id"].as_str().map(|s| s.starts_with("msg_"))),
                (Some("assistant"), Some(true)),
                "{i}"
            );
            i["content"].as_array().unwrap().clone()
        })
        .map(|p| {
            assert_eq!((p["type"].as_str(), &p["annotations"]), (Some("output_text"), &json!([])), "{p}");
            p["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(v["output_text"].as_str(), Some(text.as_str()), "{v}");
    assert!(matches!(v["decache"]["hit"].as_str(), Some("miss" | "prefix" | "subconscious")), "{v}");
    assert!(v["timings"]["predicted_n"].is_number(), "{v}");
}

const SYSTEM: &str = "You are a coding agent. Answer in one short sentence.";

#[test]
fn text_and_item_input_render_and_are_answered() {
    let s = Server::start(&["-m", &tiny(), "-c", "2048", "-t", "2"]);
    // A string input with instructions: a system turn and a user turn.
    let body = json!({"model": "gpt-5-codex", "instructions": SYSTEM, "input": "Why does the parser test fail?",
        "max_output_tokens": 8, "temperature": 0});
    assert_eq!(
        prompt(&s, &body),
        format!("<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhy does the parser test fail?<|im_end|>\n<|im_start|>assistant\n")
    );
    let v = respond(&s, &body);
    check_response(&v, 8);
    assert_eq!(v["decache"]["hit"], "miss", "{v}");
    assert_eq!(v["instructions"], SYSTEM);
    assert_eq!(v["max_output_tokens"], 8);
    assert_eq!(v["store"], true, "store defaults to true");
    // The prompt the model was given is the one /apply-template shows, token for token.
    let n = |text: &str| {
        let (_, t) = s.post("/tokenize", &json!({"content": text}));
        t["tokens"].as_array().unwrap().len() as u64
    };
    assert_eq!(v["usage"]["input_tokens"].as_u64(), Some(n(&prompt(&s, &body))));
    let (status, c) = s.post("/v1/responses/input_tokens", &body);
    assert_eq!((status, &c["object"]), (200, &json!("response.input_tokens")), "{c}");
    assert_eq!(c["input_tokens"], v["usage"]["input_tokens"]);

    // Items as Codex sends them: a developer message, a user message in
    // parts, reasoning, the assistant's text and two calls, their outputs,
    // a web search and an item type nobody knows yet.
    let items = json!({"instructions": SYSTEM, "max_output_tokens": 4, "temperature": 0, "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Sandbox: read-only."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Why does the parser test fail?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "SECRET-THOUGHT"}], "encrypted_content": "gAAA"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "call_id": "call_a", "name": "read_file", "arguments": "{\"path\":\"src/parser.rs\"}"},
        {"type": "function_call", "call_id": "call_b", "name": "list_dir", "arguments": ""},
        {"type": "function_call_output", "call_id": "call_a", "output": "fn parse() { panic!(\"deep\") }"},
        {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "parser.rs lexer.rs"}]},
        {"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "x"}},
        {"type": "brand_new_item", "payload": {"x": 1}},
        {"role": "user", "content": "And the fix?"},
    ]});
    let p = prompt(&s, &items);
    let want = format!(
        "<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>system\nSandbox: read-only.<|im_end|>\n\
         <|im_start|>user\nWhy does the parser test fail?<|im_end|>\n\
         <|im_start|>assistant\nLet me look.\n<tool_call>\n{{\"name\": \"read_file\", \"arguments\": {{\"path\": \"src/parser.rs\"}}}}\n</tool_call>\n\
         <tool_call>\n{{\"name\": \"list_dir\", \"arguments\": {{}}}}\n</tool_call><|im_end|>\n\
         <|im_start|>tool\nfn parse() {{ panic!(\"deep\") }}<|im_end|>\n<|im_start|>tool\nparser.rs lexer.rs<|im_end|>\n\
         <|im_start|>user\nAnd the fix?<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(p, want);
    assert!(!p.contains("SECRET-THOUGHT"), "reasoning is not shown again");
    let v = respond(&s, &items);
    check_response(&v, 4);
    assert_eq!(v["usage"]["input_tokens"].as_u64(), Some(n(&want)));
    // The same items in a chat request render the same prompt: the shared
    // prefix (through the tool results) comes from the cache.
    let chat = json!({"messages": [
        {"role": "system", "content": SYSTEM}, {"role": "system", "content": "Sandbox: read-only."},
        {"role": "user", "content": "Why does the parser test fail?"},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "read_file", "arguments": "{\"path\":\"src/parser.rs\"}"}},
            {"id": "call_b", "type": "function", "function": {"name": "list_dir", "arguments": ""}}]},
        {"role": "tool", "content": "fn parse() { panic!(\"deep\") }"}, {"role": "tool", "content": "parser.rs lexer.rs"},
        {"role": "user", "content": "And the fix?"}]});
    assert_eq!(prompt(&s, &chat), want, "a Responses request renders as the same chat request");

    // An image beside text is a placeholder; a user message of images only is refused.
    let img = json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}], "max_output_tokens": 2});
    assert!(prompt(&s, &img).contains("What is this?\n[an image was attached here; this model reads text only]"));
    respond(&s, &img);
}

#[test]
fn streamed_events_and_previous_response_id_continue_from_the_cache() {
    let s = Server::start(&["-m", &tiny(), "-c", "2048", "-t", "2"]);
    let first = json!({"instructions": SYSTEM, "input": "Why does the parser test fail?", "stream": true,
        "max_output_tokens": 12, "temperature": 0});
    let ev = stream(&s, &first);
    for (i, (name, data)) in ev.iter().enumerate() {
        assert_eq!(data["type"].as_str(), Some(name.as_str()), "the event name is the data's type: {data}");
        assert_eq!(data["sequence_number"].as_u64(), Some(i as u64), "{data}");
    }
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    let deltas = names.iter().filter(|n| **n == "response.output_text.delta").count();
    assert!(deltas > 0, "{names:?}");
    let mut want =
        vec!["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"];
    want.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    want.extend(["response.output_text.done", "response.content_part.done", "response.output_item.done"]);
    let last = *names.last().unwrap();
    assert!(matches!(last, "response.completed" | "response.incomplete"), "{names:?}");
    want.push(last);
    assert_eq!(names, want);
    assert_eq!(ev[0].1["response"]["status"], "in_progress");
    let text: String = ev.iter().filter_map(|(_, d)| d["delta"].as_str()).collect();
    let done = &ev.iter().find(|(n, _)| n == "response.output_text.done").unwrap().1;
    assert_eq!(done["text"].as_str(), Some(text.as_str()));
    let a = ev.last().unwrap().1["response"].clone();
    check_response(&a, 12);
    assert_eq!(a["output_text"].as_str(), Some(text.as_str()), "the deltas add up to output_text");
    let item = &ev.iter().find(|(n, _)| n == "response.output_item.done").unwrap().1["item"];
    assert_eq!(a["output"][0], *item, "the final response carries the streamed item");
    assert_eq!(a["id"], ev[0].1["response"]["id"]);
    let a_id = a["id"].as_str().unwrap().to_string();

    // The stored response is continued: its input and output come first,
    // and the cache serves them.
    let second = json!({"previous_response_id": a_id, "instructions": SYSTEM, "input": "And the fix?",
        "max_output_tokens": 6, "temperature": 0});
    let p = prompt(&s, &second);
    assert!(
        p.starts_with(&format!("<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nWhy does the parser test fail?<|im_end|>\n<|im_start|>assistant\n{text}<|im_end|>\n<|im_start|>user\nAnd the fix?")),
        "{p}"
    );
    let b = respond(&s, &second);
    check_response(&b, 6);
    assert_eq!(b["previous_response_id"].as_str(), Some(a_id.as_str()));
    assert_eq!(b["decache"]["hit"], "prefix", "{b}");
    let cached = b["usage"]["input_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert!(cached > 20, "the first exchange comes from the cache: {}", b["usage"]);

    // A streamed continuation of the continuation: usage in response.completed.
    let third = json!({"previous_response_id": b["id"], "instructions": SYSTEM, "input": "Thanks.", "stream": true, "max_output_tokens": 4, "temperature": 0});
    let ev = stream(&s, &third);
    let c = &ev.last().unwrap().1["response"];
    check_response(c, 4);
    assert!(c["usage"]["input_tokens_details"]["cached_tokens"].as_u64().unwrap() > cached, "{}", c["usage"]);
    assert!(prompt(&s, &third).contains("And the fix?"), "the whole chain is continued");

    // Stored responses can be fetched and deleted.
    let (status, got) = s.get(&format!("/v1/responses/{a_id}"));
    assert_eq!(status, 200, "{got}");
    let got: Value = serde_json::from_str(&got).unwrap();
    assert_eq!((&got["id"], &got["output_text"], &got["usage"]), (&a["id"], &a["output_text"], &a["usage"]));
    let r = request(&s.addr, "DELETE", &format!("/v1/responses/{a_id}"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["deleted"], true);
    assert_eq!(s.get(&format!("/v1/responses/{a_id}")).0, 404);
    // What continued it is still whole.
    assert!(prompt(&s, &third).contains("Why does the parser test fail?"));

    // Unknown, deleted and unstored responses cannot be continued: 404 in the Responses error shape.
    let unstored = respond(&s, &json!({"input": "hi", "store": false, "max_output_tokens": 2}));
    assert_eq!(unstored["store"], false);
    let unstored_id = unstored["id"].as_str().unwrap();
    assert_eq!(s.get(&format!("/v1/responses/{unstored_id}")).0, 404);
    for id in ["resp_nope", a_id.as_str(), unstored_id] {
        let (status, e) = s.post("/v1/responses", &json!({"previous_response_id": id, "input": "hi"}));
        assert_eq!(status, 404, "{e}");
        assert_eq!(
            e["error"],
            json!({"message": format!("Previous response with id '{id}' not found."), "type": "invalid_request_error",
                "param": "previous_response_id", "code": "previous_response_not_found"})
        );
    }
}

#[test]
fn tools_extra_fields_and_bad_bodies() {
    let s = Server::start(&["-m", &tiny(), "-c", "256", "-t", "2"]);
    // What Codex sends besides: tools of every type, reasoning, include,
    // prompt_cache_key, store false, text verbosity, unknown fields.
    let tools = json!([
        {"type": "function", "name": "shell", "description": "Run a command", "strict": false,
         "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}, "required": ["command"]}},
        {"type": "web_search"}, {"type": "local_shell"}, {"type": "file_search", "vector_store_ids": ["vs"]},
        {"type": "custom", "name": "apply_patch", "description": "Patch files", "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"}},
        {"type": "namespace", "name": "mcp__fs", "tools": [{"type": "function", "name": "read"}]},
        {"type": "image_generation"}]);
    let codex = json!({"model": "gpt-5-codex", "instructions": SYSTEM, "input": [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List the files."}]}],
        "tools": tools, "tool_choice": "auto", "parallel_tool_calls": false, "reasoning": {"effort": "medium", "summary": "auto"},
        "store": false, "stream": false, "include": ["reasoning.encrypted_content"], "prompt_cache_key": "0199-session",
        "text": {"verbosity": "low", "format": {"type": "text"}}, "metadata": {"who": "test"}, "client_metadata": {"x": "y"},
        "truncation": "auto", "service_tier": "auto", "user": "u1", "safety_identifier": "s1", "temperature": 0, "top_p": 0.9,
        "max_output_tokens": 3, "a_field_from_the_future": {"x": [1, 2]}});
    let p = prompt(&s, &codex);
    let offer = p.split("<tools>\n").nth(1).and_then(|t| t.split("\n</tools>").next()).expect("tools offered");
    assert_eq!(offer.lines().count(), 1, "only the function tool is offered: {offer}");
    assert!(offer.contains("\"name\":\"shell\"") && !p.contains("apply_patch") && !p.contains("web_search"), "{p}");
    let v = respond(&s, &codex);
    check_response(&v, 3);
    assert_eq!(
        (&v["metadata"], &v["reasoning"]["effort"], &v["store"]),
        (&json!({"who": "test"}), &json!("medium"), &json!(false))
    );
    assert_eq!(v["tools"], tools, "tools are echoed as given");
    let mut none = codex.clone();
    none["tool_choice"] = json!("none");
    assert!(!prompt(&s, &none).contains("<tools>"), "tool_choice none offers nothing");
    let mut named = codex.clone();
    named["tools"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "function", "name": "grep", "parameters": {"type": "object"}}));
    named["tool_choice"] = json!({"type": "function", "name": "grep"});
    let p = prompt(&s, &named);
    assert!(p.contains("\"name\":\"grep\"") && !p.contains("\"name\":\"shell\""), "{p}");

    // Bad bodies: 400 (or 404), the field named in the message and in `param`.
    let cases: Vec<(&str, String, &str)> = vec![
        ("empty body", String::new(), "empty request body"),
        ("not JSON", "{nope".into(), "invalid request body"),
        ("an array", "[1]".into(), "expected a JSON object"),
        ("input a number", r#"{"input":5}"#.into(), "input"),
        ("no input", r#"{"model":"m"}"#.into(), "input"),
        ("empty input", r#"{"input":""}"#.into(), "input"),
        ("empty item list", r#"{"input":[]}"#.into(), "input"),
        ("only reasoning", r#"{"input":[{"type":"reasoning","summary":[]}]}"#.into(), "input"),
        ("item a string", r#"{"input":["hi"]}"#.into(), "input[0]"),
        ("item without type or role", r#"{"input":[{"content":"hi"}]}"#.into(), "input[0]"),
        ("unknown role", r#"{"input":[{"role":"wizard","content":"hi"}]}"#.into(), "input[0].role"),
        ("message without content", r#"{"input":[{"type":"message","role":"user"}]}"#.into(), "input[0].content"),
        ("content a number", r#"{"input":[{"role":"user","content":7}]}"#.into(), "input[0].content"),
        ("image only", r#"{"input":[{"role":"user","content":[{"type":"input_image","image_url":"data:x"}]}]}"#.into(), "input[0].content"),
        ("text part without text", r#"{"input":[{"role":"user","content":[{"type":"input_text"}]}]}"#.into(), "input[0].content[0].text"),
        ("call arguments not JSON", r#"{"input":[{"role":"user","content":"hi"},{"type":"function_call","call_id":"c","name":"f","arguments":"[1"}]}"#.into(), "input[1].arguments"),
        ("call without a name", r#"{"input":[{"role":"user","content":"hi"},{"type":"function_call","call_id":"c","arguments":"{}"}]}"#.into(), "input[1].name"),
        ("output a number", r#"{"input":[{"role":"user","content":"hi"},{"type":"function_call_output","call_id":"c","output":5}]}"#.into(), "input[1].output"),
        ("temperature a string", r#"{"input":"hi","temperature":"hot"}"#.into(), "temperature"),
        ("top_p above 1", r#"{"input":"hi","top_p":7}"#.into(), "top_p"),
        ("max_output_tokens 0", r#"{"input":"hi","max_output_tokens":0}"#.into(), "max_output_tokens"),
        ("max_output_tokens a string", r#"{"input":"hi","max_output_tokens":"many"}"#.into(), "max_output_tokens"),
        ("stream a string", r#"{"input":"hi","stream":"yes"}"#.into(), "stream"),
        ("store a number", r#"{"input":"hi","store":1}"#.into(), "store"),
        ("instructions a number", r#"{"input":"hi","instructions":3}"#.into(), "instructions"),
        ("model a number", r#"{"input":"hi","model":3}"#.into(), "model"),
        ("tools an object", r#"{"input":"hi","tools":{"type":"function"}}"#.into(), "tools"),
        ("function tool without a name", r#"{"input":"hi","tools":[{"type":"function","parameters":{}}]}"#.into(), "tools[0]"),
        ("tool_choice unknown", r#"{"input":"hi","tool_choice":"sometimes"}"#.into(), "tool_choice"),
        ("tool_choice names no tool", r#"{"input":"hi","tools":[{"type":"function","name":"f"}],"tool_choice":{"type":"function","name":"g"}}"#.into(), "tool_choice"),
        ("include a string", r#"{"input":"hi","include":"everything"}"#.into(), "include"),
        ("metadata a list", r#"{"input":"hi","metadata":[1]}"#.into(), "metadata"),
        ("reasoning a string", r#"{"input":"hi","reasoning":"hard"}"#.into(), "reasoning"),
        ("previous_response_id a number", r#"{"input":"hi","previous_response_id":7}"#.into(), "previous_response_id"),
        ("background", r#"{"input":"hi","background":true}"#.into(), "background"),
        ("too long", json!({"input": "word ".repeat(400)}).to_string(), "context"),
    ];
    for (name, body, needle) in &cases {
        let r = request(&s.addr, "POST", "/v1/responses", &[("content-type", "application/json")], body.as_bytes());
        assert_eq!(r.status, 400, "{name}: {}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("{name}: not JSON: {}", r.body));
        let msg = v["error"]["message"].as_str().unwrap_or_else(|| panic!("{name}: {v}"));
        assert!(msg.contains(needle), "{name}: {msg}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{name}: {v}");
        let field_named = !matches!(*name, "empty body" | "not JSON" | "an array" | "too long" | "top_p above 1");
        if field_named {
            assert!(v["error"]["param"].as_str().is_some_and(|p| p.starts_with(needle)), "{name}: param {v}");
        }
    }
    assert!(s.post("/v1/responses", &json!({"input": "hi", "max_output_tokens": 1})).0 == 200, "still serving");
    assert_eq!(s.get("/v1/responses/resp_nope").0, 404);

    // A reply cut because the 256 cells are full says so.
    let v = respond(&s, &json!({"input": "Count.", "max_output_tokens": 4000, "temperature": 0}));
    assert_eq!(
        (v["status"].as_str(), &v["incomplete_details"]["reason"]),
        (Some("incomplete"), &json!("max_output_tokens")),
        "{v}"
    );
    assert_eq!(v["decache"]["context_full"], true, "{v}");
    assert_eq!(v["output"][0]["status"], "incomplete");
}

#[test]
fn function_calls_come_back_as_items_whole_and_streamed() {
    let model = common::smollm2().display().to_string();
    let s = Server::start(&["-m", &model, "-c", "1024", "-t", "2"]);
    let tools = json!([{"type": "function", "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"type": "web_search"}]);
    let mut input = vec![
        json!({"role": "user", "content": "What is the weather in Paris?"}),
        json!({"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}),
        json!({"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21 C"}),
        json!({"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is sunny and 21 C in Paris."}]}),
        json!({"role": "user", "content": "What is the weather in Berlin?"}),
    ];
    let body = json!({"instructions": "You are a helpful assistant with tools.", "input": input, "tools": tools,
        "temperature": 0, "max_output_tokens": 40});
    let v = respond(&s, &body);
    check_response(&v, 40);
    assert_eq!(v["status"], "completed", "{v}");
    let calls: Vec<&Value> = v["output"].as_array().unwrap().iter().filter(|i| i["type"] == "function_call").collect();
    assert_eq!(calls.len(), 1, "{v}");
    let call = calls[0];
    assert_eq!((&call["name"], &call["status"]), (&json!("get_weather"), &json!("completed")), "{call}");
    assert!(call["call_id"].as_str().unwrap().starts_with("call_") && call["id"].as_str().unwrap().starts_with("fc_"));
    let args: Value = serde_json::from_str(call["arguments"].as_str().expect("arguments as a JSON string")).unwrap();
    assert_eq!(args, json!({"city": "Berlin"}));
    assert!(!v["output_text"].as_str().unwrap().contains("tool_call"), "{v}");

    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let ev = stream(&s, &streamed);
    let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
    let at = names.iter().position(|n| *n == "response.function_call_arguments.delta").expect("argument deltas");
    assert_eq!(names[at - 1], "response.output_item.added");
    assert_eq!(ev[at - 1].1["item"]["type"], "function_call");
    assert_eq!(
        &names[at + 1..],
        ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    );
    let done = &ev[at + 1].1;
    assert_eq!(done["name"], "get_weather");
    assert_eq!(ev[at].1["delta"], done["arguments"], "{done}");
    assert_eq!(ev[at].1["item_id"], ev[at - 1].1["item"]["id"]);
    let last = &ev.last().unwrap().1["response"];
    assert_eq!(last["output"].as_array().unwrap().last().unwrap(), &ev[at + 2].1["item"]);
    assert_eq!(serde_json::from_str::<Value>(done["arguments"].as_str().unwrap()).unwrap(), json!({"city": "Berlin"}));

    // The round trip: the call and its output go back; the model answers in text.
    input.push(call.clone());
    input.push(json!({"type": "function_call_output", "call_id": call["call_id"], "output": "rainy, 12 C"}));
    let mut back = body.clone();
    back["input"] = json!(input);
    back["max_output_tokens"] = json!(24);
    let a = respond(&s, &back);
    check_response(&a, 24);
    assert!(!a["output_text"].as_str().unwrap().is_empty(), "{a}");
    assert!(a["usage"]["input_tokens_details"]["cached_tokens"].as_u64().unwrap() > 100, "{}", a["usage"]);
}
