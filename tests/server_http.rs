//! `decache serve` over real HTTP: OpenAI response shapes (whole and
//! streamed), usage/timings/decache objects, prefix and subconscious hits
//! when a client resends or prunes its history, the side endpoints, the
//! API-key guard, and bad requests answered with 4xx while the server keeps
//! serving.
mod common;
#[path = "common/http.rs"]
mod http;
use http::{request, send_raw, sse_data, Server, Streaming};
use serde_json::{json, Value};

fn model() -> String {
    common::smollm2().display().to_string()
}

fn chat(s: &Server, messages: Value) -> Value {
    let (status, v) =
        s.post("/v1/chat/completions", &json!({"messages": messages, "temperature": 0, "max_tokens": 12}));
    assert_eq!(status, 200, "{v}");
    v
}

const SYSTEM: &str = "You are a coding agent. Use the tools and answer in one short sentence.";
const READ: &str = "src/parser.rs:\nfn parse(s: &str) -> Node { let t = lex(s); build(&t, 0) }\nfn build(t: &[Tok], d: usize) -> Node { if d > 64 { panic!(\"deep\") } Node::new(t, d) }";
const REMINDER: &str = "<system-reminder>The todo list is empty. Use the todo tool when it helps; do not mention this reminder.</system-reminder>";

#[test]
fn chat_completions_cache_hits_and_shapes() {
    let s = Server::start(&["-m", &model(), "-c", "2048", "-t", "2"]);
    let msgs =
        json!([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Why does the parser test fail?"}]);
    let v = chat(&s, msgs.clone());
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["choices"][0]["message"]["content"].is_string());
    assert!(matches!(v["choices"][0]["finish_reason"].as_str(), Some("stop" | "length")));
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap())
    );
    assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 0);
    assert_eq!(v["decache"]["hit"], "miss");
    for k in
        ["cache_n", "prompt_n", "prompt_ms", "prompt_per_second", "predicted_n", "predicted_ms", "predicted_per_second"]
    {
        assert!(v["timings"][k].is_number(), "timings.{k} missing: {v}");
    }
    let prompt_n = u["prompt_tokens"].as_u64().unwrap();

    // The same request again: all but the last prompt token come from the cache.
    let v = chat(&s, msgs);
    assert_eq!(v["decache"]["hit"], "prefix");
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64(), Some(prompt_n - 1));
    assert_eq!(v["timings"]["prompt_n"], 1);

    // A history A B C, then the client prunes B (the reminder and the file read): A C D.
    let a = json!({"role": "system", "content": SYSTEM});
    let ask = json!({"role": "user", "content": "Why does the parser test fail? Look at the parser."});
    let b1 = json!({"role": "user", "content": REMINDER});
    let b2 = json!({"role": "tool", "content": READ});
    let c = json!({"role": "assistant", "content": "The build function panics when the nesting is deeper than 64 levels, so the deep test fails."});
    let c2 = json!({"role": "user", "content": "test parser::deep ... FAILED\ntest parser::flat ... ok\ntest result: FAILED. 1 passed; 1 failed"});
    chat(&s, json!([a, ask, b1, c, b2, c2]));
    let v = chat(&s, json!([a, ask, c, c2, {"role": "user", "content": "How do I raise the limit?"}]));
    let d = &v["decache"];
    eprintln!("pruned request: {d}, timings {}", v["timings"]);
    assert_eq!(d["hit"], "subconscious", "{v}");
    assert!(d["spans_matched"].as_u64().unwrap() >= 3, "{d}");
    assert!(d["tokens_removed"].as_u64().unwrap() >= 40, "the reminder and the read are deleted: {d}");
    let (cached, prompt) = (v["timings"]["cache_n"].as_u64().unwrap(), v["timings"]["prompt_n"].as_u64().unwrap());
    assert!(cached > 4 * prompt, "most of the pruned history is reused: {cached} cached, {prompt} prefilled");

    // With prefix caching only, the same pruning costs a prefill from the pruned point.
    let p = Server::start(&["-m", &model(), "-c", "2048", "-t", "2", "--no-subconscious"]);
    chat(&p, json!([a, ask, b1, c, b2, c2]));
    let w = chat(&p, json!([a, ask, c, c2, {"role": "user", "content": "How do I raise the limit?"}]));
    assert_eq!(w["decache"]["hit"], "prefix");
    assert!(w["timings"]["prompt_n"].as_u64().unwrap() > 2 * prompt, "prefix-only prefills more: {}", w["timings"]);
}

#[test]
fn streaming_side_endpoints_and_auth() {
    let s = Server::start(&["-m", &model(), "-c", "1024", "-t", "2", "--api-key", "sekrit", "--alias", "smol"]);
    let auth = [("content-type", "application/json"), ("authorization", "Bearer sekrit")];
    let body = json!({"model": "smol", "messages": [{"role": "user", "content": "Count to five."}], "stream": true,
        "stream_options": {"include_usage": true}, "temperature": 0, "max_tokens": 16});
    let r = request(&s.addr, "POST", "/v1/chat/completions", &auth, body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.headers.to_ascii_lowercase().contains("text/event-stream"), "{}", r.headers);
    let data = sse_data(&r.body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{}", r.body);
    let chunks: Vec<Value> = data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).unwrap()).collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "smol"));
    let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
    assert!(!text.is_empty());
    let fin = chunks.iter().find(|c| c["choices"][0]["finish_reason"].is_string()).expect("a finish chunk");
    assert!(fin["timings"]["predicted_n"].as_u64().unwrap() > 0);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(chunks.last().unwrap()["choices"], json!([]));
    assert_eq!(usage["completion_tokens"], fin["timings"]["predicted_n"]);

    // Text completions, whole and streamed.
    let body = json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0});
    let r = request(&s.addr, "POST", "/v1/completions", &auth, body.to_string().as_bytes());
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].as_str().unwrap().contains("Paris"), "{v}");
    let body = json!({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0, "stream": true});
    let r = request(&s.addr, "POST", "/v1/completions", &auth, body.to_string().as_bytes());
    let text: String = sse_data(&r.body)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| c["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert!(text.contains("Paris"), "{}", r.body);

    // The key guard: missing or wrong key → 401; x-api-key works; /health is open.
    let r = request(&s.addr, "GET", "/v1/models", &[], b"");
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(r.body.contains("API key"));
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["error"]["type"], "authentication_error", "{}", r.body);
    let r = request(&s.addr, "GET", "/v1/models", &[("x-api-key", "sekrit")], b"");
    assert_eq!(r.status, 200);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["data"][0]["id"], "smol");
    // Any model name is answered by the loaded model (llama-server's habit;
    // `--strict-model` refuses, see the bad-requests test).
    let r = request(&s.addr, "GET", "/v1/models/gpt-4o", &auth, b"");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["id"], "smol");
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1});
    let r = request(&s.addr, "POST", "/v1/chat/completions", &auth, body.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.get("/health").0, 200);

    let r = request(&s.addr, "POST", "/tokenize", &auth, br#"{"content": "Hello world", "with_pieces": true}"#);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    let ids: Vec<u64> = v["tokens"].as_array().unwrap().iter().map(|t| t["id"].as_u64().unwrap()).collect();
    assert_eq!(v["tokens"][1]["piece"], " world");
    let r = request(&s.addr, "POST", "/detokenize", &auth, json!({"tokens": ids}).to_string().as_bytes());
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["content"], "Hello world");
    let r = request(&s.addr, "GET", "/metrics", &auth, b"");
    assert!(
        r.body.contains("decache:requests_total 4") && r.body.contains("# TYPE decache:prompt_tokens_total counter"),
        "{}",
        r.body
    );
    let r = request(&s.addr, "GET", "/props", &auth, b"");
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["n_ctx"], 1024);
    let r = request(&s.addr, "GET", "/slots", &auth, b"");
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v[0]["requests"], 4);
    assert_eq!(v[0]["busy"], false);
}

#[test]
fn bad_requests_get_4xx_and_the_server_keeps_serving() {
    let mut s = Server::start(&["-m", &model(), "-c", "256", "-t", "2", "--max-body-mb", "1", "--strict-model"]);
    let long = "word ".repeat(400);
    let huge = "x".repeat(2 << 20);
    let cases: Vec<(&str, &str, String, u16, &str)> = vec![
        ("empty body", "/v1/chat/completions", String::new(), 400, "empty request body"),
        ("not JSON", "/v1/chat/completions", "{not json".into(), 400, "invalid request body"),
        ("JSON array", "/v1/chat/completions", "[1,2]".into(), 400, "invalid request body"),
        ("no messages field", "/v1/chat/completions", r#"{"model":"x"}"#.into(), 400, "messages"),
        ("empty messages", "/v1/chat/completions", r#"{"messages":[]}"#.into(), 400, "messages is empty"),
        ("messages not a list", "/v1/chat/completions", r#"{"messages":"hi"}"#.into(), 400, "invalid"),
        ("unknown role", "/v1/chat/completions", r#"{"messages":[{"role":"wizard","content":"hi"}]}"#.into(), 400, "unknown role 'wizard'"),
        ("missing content", "/v1/chat/completions", r#"{"messages":[{"role":"user"}]}"#.into(), 400, "messages[0].content"),
        ("content a number", "/v1/chat/completions", r#"{"messages":[{"role":"user","content":5}]}"#.into(), 400, "invalid"),
        ("image part", "/v1/chat/completions", r#"{"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#.into(), 400, "'image_url' are not supported"),
        ("temperature a string", "/v1/chat/completions", r#"{"messages":[{"role":"user","content":"hi"}],"temperature":"hot"}"#.into(), 400, "invalid"),
        ("repeat_penalty 0", "/v1/chat/completions", r#"{"messages":[{"role":"user","content":"hi"}],"repeat_penalty":0}"#.into(), 400, "repeat_penalty"),
        ("top_p above 1", "/v1/chat/completions", r#"{"messages":[{"role":"user","content":"hi"}],"top_p":7}"#.into(), 400, "top_p"),
        ("max_tokens 0", "/v1/chat/completions", r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":0}"#.into(), 400, "max_tokens"),
        ("n = 3", "/v1/chat/completions", r#"{"messages":[{"role":"user","content":"hi"}],"n":3}"#.into(), 400, "one choice"),
        ("unknown model", "/v1/chat/completions", r#"{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}"#.into(), 404, "gpt-9"),
        ("too long for the context", "/v1/chat/completions", json!({"messages":[{"role":"user","content": long}]}).to_string(), 400, "context"),
        ("body too large", "/v1/chat/completions", json!({"messages":[{"role":"user","content": huge}]}).to_string(), 413, ""),
        ("prompt missing", "/v1/completions", r#"{"max_tokens":3}"#.into(), 400, "prompt"),
        ("token id out of range", "/v1/completions", r#"{"prompt":[1,2,999999]}"#.into(), 400, "outside the vocabulary"),
        ("empty prompt", "/v1/completions", r#"{"prompt":""}"#.into(), 400, "empty"),
        ("detokenize bad id", "/detokenize", r#"{"tokens":[4000000000]}"#.into(), 400, "outside the vocabulary"),
        ("tokenize without content", "/tokenize", r#"{}"#.into(), 400, "content"),
        ("no such endpoint", "/v1/nope", "{}".into(), 404, "no such endpoint"),
        ("tool without a name", "/v1/chat/completions", r#"{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{}}]}"#.into(), 400, "tools[0]"),
        ("tool call with bad arguments", "/v1/chat/completions", r#"{"messages":[{"role":"user","content":"hi"},{"role":"assistant","tool_calls":[{"function":{"name":"f","arguments":"[1"}}]}]}"#.into(), 400, "messages[1].tool_calls[0]"),
        ("anthropic without max_tokens", "/v1/messages", r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#.into(), 400, "max_tokens"),
        ("context_management a string", "/v1/messages", r#"{"model":"m","max_tokens":4,"messages":[{"role":"user","content":"hi"}],"context_management":"clear"}"#.into(), 400, "context_management: expected an object"),
        ("unknown context edit", "/v1/messages/count_tokens", r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"context_management":{"edits":[{"type":"clear_all"}]}}"#.into(), 400, "context_management.edits[0].type"),
        ("thinking block without thinking", "/v1/messages", r#"{"model":"m","max_tokens":4,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"thinking","signature":"s"}]},{"role":"user","content":"go"}]}"#.into(), 400, "messages[1].content[0].thinking"),
        ("tool_choice of an unknown type", "/v1/messages", r#"{"model":"m","max_tokens":4,"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"f"}],"tool_choice":{"type":"sometimes"}}"#.into(), 400, "tool_choice.type"),
        ("thinking of an unknown type", "/v1/messages", r#"{"model":"m","max_tokens":4,"messages":[{"role":"user","content":"hi"}],"thinking":{"type":"deep"}}"#.into(), 400, "thinking.type"),
        ("metadata a string", "/v1/messages", r#"{"model":"m","max_tokens":4,"messages":[{"role":"user","content":"hi"}],"metadata":"x"}"#.into(), 400, "metadata"),
        ("unknown content block", "/v1/messages", r#"{"model":"m","max_tokens":4,"messages":[{"role":"user","content":[{"type":"hologram"}]}]}"#.into(), 400, "messages[0].content[0].type"),
        ("chat tool_choice unknown", "/v1/chat/completions", r#"{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":"sometimes"}"#.into(), 400, "tool_choice"),
        ("chat tool_choice names no tool", "/v1/chat/completions", r#"{"messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function","function":{"name":"g"}}}"#.into(), 400, "no tool named 'g'"),
    ];
    assert!(cases.len() >= 20);
    for (name, path, body, want, needle) in &cases {
        let r = request(&s.addr, "POST", path, &[("content-type", "application/json")], body.as_bytes());
        assert_eq!(r.status, *want, "{name}: {}", r.body);
        if *want != 413 {
            let v: Value =
                serde_json::from_str(&r.body).unwrap_or_else(|_| panic!("{name}: error body is not JSON: {}", r.body));
            let msg = v["error"]["message"].as_str().unwrap_or_else(|| panic!("{name}: no error.message: {v}"));
            assert!(msg.contains(needle), "{name}: {msg}");
            let want_type = match (*want, path.starts_with("/v1/messages")) {
                (404, _) => "not_found_error",
                (_, _) => "invalid_request_error",
            };
            assert_eq!(v["error"]["type"], want_type, "{name}: {v}");
            if path.starts_with("/v1/messages") {
                assert_eq!(v["type"], "error", "{name}: Anthropic's error shape");
            }
        }
    }
    let r = request(&s.addr, "GET", "/v1/models/gpt-9", &[], b"");
    assert_eq!(r.status, 404, "--strict-model: {}", r.body);
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["error"]["code"], "model_not_found");
    // A `system` message among the others (as Claude Code sends its
    // environment block on every turn) is a system turn, in both the
    // Messages API and count_tokens; an unknown role is still refused.
    let with_system = json!({"model": "claude-x", "max_tokens": 1, "messages": [
        {"role": "user", "content": "hi"}, {"role": "system", "content": [{"type": "text", "text": "<env>cwd: /tmp</env>"}]},
        {"role": "user", "content": "and again"}]});
    let (status, v) = s.post("/v1/messages", &with_system);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["type"], "message", "{v}");
    let (status, with) = s.post("/v1/messages/count_tokens", &with_system);
    assert_eq!(status, 200, "{with}");
    let mut plain = with_system.clone();
    plain["messages"].as_array_mut().unwrap().remove(1);
    let (_, without) = s.post("/v1/messages/count_tokens", &plain);
    assert!(with["input_tokens"].as_u64() > without["input_tokens"].as_u64(), "{with} {without}");
    let mut wizard = with_system.clone();
    wizard["messages"][1]["role"] = json!("wizard");
    let (status, v) = s.post("/v1/messages", &wizard);
    assert_eq!((status, v["error"]["type"].as_str()), (400, Some("invalid_request_error")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("messages[1].role"), "{v}");
    let r = request(
        &s.addr,
        "POST",
        "/v1/chat/completions",
        &[],
        json!({"messages":[{"role":"user","content": long}]}).to_string().as_bytes(),
    );
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["n_ctx"], 256);
    assert!(v["error"]["n_prompt_tokens"].as_u64().unwrap() > 256);
    // CORS is off: a web page on another origin gets no permission to read
    // the answer (no Access-Control-Allow-* header), neither on a preflight
    // nor on the request itself.
    let origin = [
        ("origin", "http://evil.example"),
        ("access-control-request-method", "POST"),
        ("content-type", "application/json"),
    ];
    for method in ["OPTIONS", "POST"] {
        let r = request(
            &s.addr,
            method,
            "/v1/chat/completions",
            &origin,
            br#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":1}"#,
        );
        assert!(!r.headers.to_ascii_lowercase().contains("access-control-allow"), "{method}: {}", r.headers);
    }
    // Garbage that is not HTTP at all, and a client that leaves mid-stream.
    let _ = send_raw(&s.addr, b"\x16\x03\x01\x02\x00 not http\r\n\r\n");
    {
        use std::io::Write;
        let mut c = std::net::TcpStream::connect(&s.addr).unwrap();
        let body = json!({"messages":[{"role":"user","content":"Tell a long story."}],"stream":true,"max_tokens":200});
        let b = body.to_string();
        write!(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}", b.len()).unwrap();
        let mut buf = [0u8; 512];
        let _ = std::io::Read::read(&mut c, &mut buf);
    } // dropped: the generation must stop and free the slot
    assert!(s.alive(), "the server died");
    let (status, v) =
        s.post("/v1/chat/completions", &json!({"messages":[{"role":"user","content":"hi"}],"max_tokens":3}));
    assert_eq!(status, 200, "{v}");
    let (_, slots) = s.get("/slots");
    let slots: Value = serde_json::from_str(&slots).unwrap();
    assert_eq!(slots[0]["busy"], false);
    // The abandoned stream stopped long before its 200 tokens.
    let (_, metrics) = s.get("/metrics");
    let predicted: f64 =
        metrics.lines().find_map(|l| l.strip_prefix("decache:tokens_predicted_total ")).unwrap().parse().unwrap();
    assert!(predicted < 100.0, "the abandoned generation went on: {predicted} tokens predicted in all");
    // A reply cut because the 256 cells are full is told apart from one cut
    // at max_tokens (a count the model goes on with until the cache is full).
    let count = json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 4000, "temperature": 0});
    let (status, v) = s.post("/v1/completions", &count);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (v["choices"][0]["finish_reason"].as_str(), v["decache"]["context_full"].as_bool()),
        (Some("length"), Some(true)),
        "{v}"
    );
    let (_, v) =
        s.post("/v1/completions", &json!({"prompt": "1, 2, 3, 4, 5, 6, 7, 8,", "max_tokens": 4, "temperature": 0}));
    assert_eq!(
        (v["choices"][0]["finish_reason"].as_str(), v["decache"]["context_full"].as_bool()),
        (Some("length"), Some(false)),
        "{v}"
    );
}

#[test]
fn slots_keep_their_conversations_and_a_full_queue_says_503() {
    let s = Server::start(&["-m", &model(), "-c", "1024", "-t", "1", "-np", "2", "--queue", "1"]);
    let x = json!([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Explain the parser bug in one sentence."}]);
    let y = json!([{"role": "system", "content": "You are a poet."}, {"role": "user", "content": "Write one line about the sea."}]);
    let slot = |v: &Value| v["decache"]["slot"].as_u64().unwrap();
    let (vx, vy) = (chat(&s, x.clone()), chat(&s, y.clone()));
    assert_ne!(slot(&vx), slot(&vy), "a new conversation went to the busy cache's slot");
    let (vx2, vy2) = (chat(&s, x), chat(&s, y));
    assert_eq!((slot(&vx2), slot(&vy2)), (slot(&vx), slot(&vy)), "each conversation returns to its slot");
    assert_eq!((vx2["decache"]["hit"].as_str(), vy2["decache"]["hit"].as_str()), (Some("prefix"), Some("prefix")));

    // More long requests at once than two slots and a queue of one can hold.
    let addr = s.addr.clone();
    let body = json!({"messages": [{"role": "user", "content": "Tell a very long story."}], "max_tokens": 160, "temperature": 0.9}).to_string();
    let handles: Vec<_> = (0..7)
        .map(|_| {
            let (addr, body) = (addr.clone(), body.clone());
            std::thread::spawn(move || {
                request(&addr, "POST", "/v1/chat/completions", &[("content-type", "application/json")], body.as_bytes())
            })
        })
        .collect();
    let replies: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let busy: Vec<_> = replies.iter().filter(|r| r.status == 503).collect();
    assert!(
        replies.iter().all(|r| r.status == 200 || r.status == 503),
        "{:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(!busy.is_empty(), "no request was refused with 7 at once");
    assert!(replies.iter().filter(|r| r.status == 200).count() >= 3, "the slots and the queue should serve at least 3");
    assert!(busy[0].body.contains("busy"), "{}", busy[0].body);
    assert_eq!(
        serde_json::from_str::<Value>(&busy[0].body).unwrap()["error"]["type"],
        "unavailable_error",
        "{}",
        busy[0].body
    );
    assert_eq!(s.get("/health").0, 200);
}

#[test]
fn auto_compaction_prunes_by_meaning_and_later_requests_keep_hitting() {
    let s = Server::start(&["-m", &model(), "-c", "512", "-t", "2"]);
    let mut history = vec![json!({"role": "system", "content": SYSTEM})];
    for t in 1..=5 {
        history.push(json!({"role": "user", "content": format!("Step {t}: fix the parser and run the tests.")}));
        history
            .push(json!({"role": "user", "content": "<system-reminder>Todo list: keep it current.</system-reminder>"}));
        history.push(json!({"role": "tool", "content": READ}));
        history.push(json!({"role": "assistant", "content": format!("Step {t} is done; the tests pass.")}));
    }
    history.push(json!({"role": "user", "content": "What is left to do?"}));
    // Too long for 512 cells as sent: refused when compaction is off for the request.
    let (status, v) = s.post(
        "/v1/chat/completions",
        &json!({"messages": history, "max_tokens": 8, "temperature": 0,
        "chat_template_kwargs": {"enable_auto_prune": false}}),
    );
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    let full = v["error"]["n_prompt_tokens"].as_u64().unwrap();

    let v = chat(&s, json!(history));
    let pruned = v["decache"]["messages_pruned"].as_u64().unwrap();
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    eprintln!("auto-compaction: {full} tokens as sent, {prompt} after pruning {pruned} messages");
    assert!(pruned >= 4, "{v}");
    assert!(prompt <= 512 * 7 / 10 + 40, "pruned down to the target: {prompt}");

    // The client goes on with its own (unpruned) history: the same messages are pruned
    // from memory, and the request meets the cache.
    let answer = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    history.push(json!({"role": "assistant", "content": answer}));
    history.push(json!({"role": "user", "content": "And after that?"}));
    let w = chat(&s, json!(history));
    assert!(w["decache"]["messages_pruned"].as_u64().unwrap() >= pruned, "{w}");
    assert_ne!(w["decache"]["hit"], "miss", "{w}");
    let (cached, fresh) = (w["timings"]["cache_n"].as_u64().unwrap(), w["timings"]["prompt_n"].as_u64().unwrap());
    eprintln!("next turn: {cached} tokens from the cache, {fresh} prefilled ({})", w["decache"]);
    assert!(cached > 3 * fresh, "the pruned history is reused: {cached} cached, {fresh} prefilled");
}

#[test]
fn auto_compaction_cuts_inside_messages_and_later_requests_keep_hitting() {
    let s = Server::start(&["-m", &model(), "-c", "1024", "-t", "2"]);
    let log: String = (0..12).map(|i| format!("test parser::case_{i} ... ok\n")).collect::<String>()
        + "test result: ok. 12 passed; 0 failed\n";
    let mut history = vec![json!({"role": "system", "content": SYSTEM})];
    for t in 1..=5 {
        // Reminders ride inside the user's message, thinking inside the reply, as harnesses send them.
        history.push(
            json!({"role": "user", "content": format!("Step {t}: fix the parser and run the tests.\n{REMINDER}")}),
        );
        history.push(json!({"role": "assistant", "content": "<think>The parser panics on deep nesting; the limit lives in build. Run the tests first.</think>Running the tests."}));
        history.push(json!({"role": "tool", "content": log}));
        history.push(json!({"role": "assistant", "content": format!("Step {t} is done; the tests pass.")}));
    }
    history.push(json!({"role": "user", "content": "What is left to do?"}));
    let (status, v) = s.post(
        "/v1/chat/completions",
        &json!({"messages": history, "max_tokens": 8, "temperature": 0,
        "auto_compaction": false}),
    );
    assert_eq!(status, 400, "{v}");
    let full = v["error"]["n_prompt_tokens"].as_u64().unwrap();

    let v = chat(&s, json!(history));
    let d = &v["decache"];
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    eprintln!("auto-compaction inside messages: {full} tokens as sent, {prompt} after ({d})");
    assert!(d["parts_pruned"].as_u64().unwrap() >= 4, "cut inside messages: {d}");
    assert!(prompt <= 1024 * 7 / 10 + 40, "pruned down to the target: {prompt}");

    let answer = v["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    history.push(json!({"role": "assistant", "content": answer}));
    history.push(json!({"role": "user", "content": "And after that?"}));
    let w = chat(&s, json!(history));
    assert_eq!(w["decache"]["parts_pruned"], d["parts_pruned"], "the same cuts, from memory: {w}");
    let (cached, fresh) = (w["timings"]["cache_n"].as_u64().unwrap(), w["timings"]["prompt_n"].as_u64().unwrap());
    eprintln!("next turn: {cached} tokens from the cache, {fresh} prefilled ({})", w["decache"]);
    assert!(cached > 3 * fresh, "the cut history is reused: {cached} cached, {fresh} prefilled");
}

#[test]
fn a_long_prefill_streams_keep_alive_comments() {
    let s = Server::start(&["-m", &model(), "-c", "4096", "-t", "2", "--sse-keep-alive", "0.05"]);
    let long = format!("Summarise this log.\n{}", "test parser::case ... ok\n".repeat(300));
    let body =
        json!({"messages": [{"role": "user", "content": long}], "stream": true, "max_tokens": 2, "temperature": 0});
    let r = request(
        &s.addr,
        "POST",
        "/v1/chat/completions",
        &[("content-type", "application/json")],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The role chunk goes out at once; the first text waits for the prefill.
    let first = r.body.find("data:").expect("no data");
    let second = first + 5 + r.body[first + 5..].find("data:").expect("one chunk only");
    let during = r.body[first..second].matches(": keep-alive").count();
    eprintln!("{during} keep-alive comments during the prefill");
    assert!(during >= 1, "no keep-alive during the prefill: {}", &r.body[..second.min(600)]);
    assert_eq!(sse_data(&r.body).last().map(String::as_str), Some("[DONE]"));
}

/// A Qwen-style template that renders `tools` itself.
const NATIVE_TOOLS: &str = "{%- if tools %}<|im_start|>system\n{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}\
# Tools\n<tools>\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}</tools>\n\
Return each call as JSON inside <tool_call></tool_call> tags.<|im_end|>\n\
{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n{% endif %}\
{% for m in messages %}{% if not (loop.first and m.role == 'system') %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

#[test]
fn tools_go_through_a_template_that_renders_them_else_the_system_prompt() {
    let tools = json!([{"type": "function", "function": {"name": "grep", "description": "Search files",
        "parameters": {"type": "object", "properties": {"pattern": {"type": "string"}}}}}]);
    let req = json!({"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Find TODOs."}], "tools": tools});

    // SmolLM2's template knows nothing of tools: they are described in the system prompt.
    let s = Server::start(&["-m", &model(), "-c", "1024", "-t", "2"]);
    let (status, v) = s.post("/apply-template", &req);
    assert_eq!(status, 200, "{v}");
    let prompt = v["prompt"].as_str().unwrap();
    assert!(prompt.contains("You can call functions") && prompt.contains("\"name\":\"grep\""), "{prompt}");
    let mut none = req.clone();
    none["tool_choice"] = json!("none");
    let v = s.post("/apply-template", &none).1;
    assert!(!v["prompt"].as_str().unwrap().contains("grep"), "tool_choice none offers nothing: {v}");
    drop(s);

    // A template that renders `tools` gets them, and no second offer is added.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tools.jinja");
    std::fs::write(&file, NATIVE_TOOLS).unwrap();
    let s = Server::start(&["-m", &model(), "-c", "1024", "-t", "2", "--chat-template-file", file.to_str().unwrap()]);
    let v = s.post("/apply-template", &req).1;
    let prompt = v["prompt"].as_str().unwrap();
    assert!(prompt.starts_with(&format!("<|im_start|>system\n{SYSTEM}\n\n# Tools\n<tools>\n")), "{prompt}");
    assert!(prompt.contains("\"name\": \"grep\"") && !prompt.contains("You can call functions"), "{prompt}");
    assert!(prompt.ends_with("<|im_start|>user\nFind TODOs.<|im_end|>\n<|im_start|>assistant\n"), "{prompt}");
    // And a request with tools is answered (the reply's calls, if any, are parsed as before).
    let mut ask = req.clone();
    ask["max_tokens"] = json!(8);
    ask["temperature"] = json!(0);
    let (status, v) = s.post("/v1/chat/completions", &ask);
    assert_eq!(status, 200, "{v}");
    assert!(matches!(v["choices"][0]["finish_reason"].as_str(), Some("stop" | "length" | "tool_calls")), "{v}");
}

#[test]
fn served_requests_write_transcripts_that_replay_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let tdir = dir.path().join("t");
    {
        let s = Server::start(&[
            "-m",
            &model(),
            "-c",
            "1024",
            "-t",
            "2",
            "-np",
            "1",
            "--transcripts",
            tdir.to_str().unwrap(),
        ]);
        let a = json!({"role": "system", "content": SYSTEM});
        let ask = json!({"role": "user", "content": "Why does the parser test fail? Look at the parser."});
        let b = json!({"role": "tool", "content": READ});
        let c = json!({"role": "user", "content": REMINDER});
        for msgs in [json!([a, ask, b, c]), json!([a, ask, c, {"role": "user", "content": "And the lexer?"}])] {
            let (status, v) =
                s.post("/v1/chat/completions", &json!({"messages": msgs, "temperature": 0.8, "max_tokens": 24}));
            assert_eq!(status, 200, "{v}");
            eprintln!("hit {}", v["decache"]["hit"]);
        }
    }
    let files: Vec<_> = std::fs::read_dir(&tdir).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let t = std::fs::read_to_string(&files[0]).unwrap();
    assert!(t.contains("\"command\":\"serve\"") && t.matches("\"note\":\"request\"").count() == 2, "{t}");
    assert!(t.contains("\"type\":\"remove\""), "the second request reused the cache around a removed span");
    let (ok, out) = http::replay(&files[0]);
    assert!(ok && out.contains("2 generations") && out.contains("all bit-exact"), "{out}");
}

fn tiny() -> String {
    common::tiny_smollm2().display().to_string()
}

/// A request shaped as Claude Code 2.x sends one: the billing header at the
/// head of the system prompt, cache_control everywhere, metadata, thinking,
/// a system message among the others, thinking and redacted thinking in an
/// assistant turn, an error result holding an image, a tool search that
/// loads one deferred tool (the other stays out), a server tool, context
/// management and the beta fields.
fn claude_code_request(cch: &str) -> Value {
    json!({
        "model": "claude-sonnet-4-5", "max_tokens": 6, "temperature": 0,
        "metadata": {"user_id": "user_abc_account_def_session_123"},
        "service_tier": "auto", "container": null, "mcp_servers": [], "output_config": {"effort": "high"}, "top_k": 40,
        "stop_sequences": ["\n\nHuman:"],
        "system": [
            {"type": "text", "text": format!("x-anthropic-billing-header: cc_version=2.1.3.a1b; cc_entrypoint=cli; cch={cch};")},
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.", "cache_control": {"type": "ephemeral"}}
        ],
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"},
            {"type": "clear_tool_uses_20250919", "trigger": {"type": "input_tokens", "value": 100000}}]},
        "tools": [
            {"name": "Read", "description": "Read a file", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}}, "cache_control": {"type": "ephemeral"}},
            {"name": "ToolSearch", "description": "Load deferred tools", "input_schema": {"type": "object"}},
            {"name": "mcp__docs__search", "description": "Search the docs", "input_schema": {"type": "object"}, "defer_loading": true},
            {"name": "mcp__db__query", "description": "Query the database", "input_schema": {"type": "object"}, "defer_loading": true},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
            {"type": "tool_search_tool_regex_20251119", "name": "tool_search_tool_regex"}
        ],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": false},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Why does the parser fail?", "cache_control": {"type": "ephemeral"}}]},
            {"role": "system", "content": "<env>cwd: /repo</env>"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Read the parser first.", "signature": "EqQBCkYIBx"},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy"},
                {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "/repo/parser.rs"}},
                {"type": "tool_use", "id": "toolu_02", "name": "ToolSearch", "input": {"query": "docs"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "is_error": true, "content": [
                    {"type": "text", "text": "File does not exist."},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}, "cache_control": {"type": "ephemeral"}}]},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": [{"type": "tool_reference", "tool_name": "mcp__docs__search"}]},
                {"type": "text", "text": "<system-reminder>Keep the todo list current.</system-reminder>", "cache_control": {"type": "ephemeral"}}
            ]}
        ]
    })
}

/// The `event:`/`data:` pairs of an Anthropic stream, as JSON.
fn anthropic_events(body: &str) -> Vec<Value> {
    sse_data(body).iter().map(|d| serde_json::from_str(d).unwrap_or_else(|e| panic!("{e}: {d}"))).collect()
}

#[test]
fn claude_code_requests_are_taken_and_what_cannot_be_read_is_said() {
    let s = Server::start(&["-m", &tiny(), "-c", "2048", "-t", "2"]);
    let beta = [
        ("content-type", "application/json"),
        ("anthropic-version", "2023-06-01"),
        (
            "anthropic-beta",
            "interleaved-thinking-2025-05-14,context-management-2025-06-27,advanced-tool-use-2025-11-20",
        ),
        ("x-api-key", "anything"),
    ];
    let req = claude_code_request("4f2e1");
    let r = request(&s.addr, "POST", "/v1/messages", &beta, req.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!((v["type"].as_str(), v["role"].as_str()), (Some("message"), Some("assistant")), "{v}");
    assert_eq!(v["context_management"], json!({"applied_edits": []}), "{v}");
    assert!(v["content"].as_array().is_some_and(|c| !c.is_empty()), "{v}");

    // Streamed: the same blocks as events, context management in message_delta.
    let mut streamed = req.clone();
    streamed["stream"] = json!(true);
    let r = request(&s.addr, "POST", "/v1/messages", &beta, streamed.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    let ev = anthropic_events(&r.body);
    assert_eq!(ev[0]["type"], "message_start", "{}", r.body);
    assert_eq!(ev.last().unwrap()["type"], "message_stop");
    let delta = ev.iter().find(|e| e["type"] == "message_delta").unwrap();
    assert_eq!(delta["context_management"]["applied_edits"], json!([]), "{delta}");

    // The prompt as the model reads it: the error and the image note reach
    // it, the loaded deferred tool is offered and the other is not, server
    // tools are left out, the billing line is gone.
    let (status, t) = s.post("/v1/messages/apply-template", &req);
    assert_eq!(status, 200, "{t}");
    let prompt = t["prompt"].as_str().unwrap();
    for want in [
        "Error: File does not exist.\n[image omitted: this model reads text only]",
        "\"name\":\"mcp__docs__search\"",
        "[tool mcp__docs__search loaded]",
        "<|im_start|>system\n<env>cwd: /repo</env>",
        "<system-reminder>Keep the todo list current.</system-reminder>",
    ] {
        assert!(prompt.contains(want), "{want:?} missing from:\n{prompt}");
    }
    for unwanted in [
        "mcp__db__query",
        "web_search",
        "tool_search_tool_regex",
        "x-anthropic-billing-header",
        "Read the parser first",
    ] {
        assert!(!prompt.contains(unwanted), "{unwanted:?} in:\n{prompt}");
    }

    // The billing line changes on every request: the same prompt, the same
    // count, and the second request prefills one token.
    let other = claude_code_request("0b9c8");
    assert_eq!(s.post("/v1/messages/apply-template", &other).1["prompt"], t["prompt"]);
    let (c1, c2) = (s.post("/v1/messages/count_tokens", &req).1, s.post("/v1/messages/count_tokens", &other).1);
    assert_eq!(c1["input_tokens"], c2["input_tokens"], "{c1} {c2}");
    let (status, v) = s.post("/v1/messages", &other);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["timings"]["prompt_n"], 1, "the billing line cost a prefill: {}", v["decache"]);

    // A user turn made only of an image: 400 naming the block.
    let mut image_only = req.clone();
    image_only["messages"].as_array_mut().unwrap().push(json!({"role": "assistant", "content": "Done."}));
    image_only["messages"].as_array_mut().unwrap().push(json!({"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}]}));
    for path in ["/v1/messages", "/v1/messages/count_tokens"] {
        let (status, v) = s.post(path, &image_only);
        assert_eq!((status, v["type"].as_str()), (400, Some("error")), "{path}: {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with("messages[5].content[0]: image blocks are not supported"), "{path}: {msg}");
    }

    // Chat completions: an image in a tool message is a note, a required
    // call is asked for, a user message of an image alone is refused.
    let chat = json!({"messages": [
        {"role": "user", "content": "Take a screenshot."},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "shot", "arguments": ""}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
        {"role": "user", "content": "Again."}],
        "tools": [{"type": "function", "function": {"name": "shot", "parameters": {}}}], "tool_choice": "required"});
    let (status, t) = s.post("/apply-template", &chat);
    assert_eq!(status, 200, "{t}");
    let prompt = t["prompt"].as_str().unwrap();
    assert!(prompt.contains("<|im_start|>tool\n[image omitted: this model reads text only]<|im_end|>"), "{prompt}");
    assert!(prompt.contains("Again.\n\n(Reply with a tool call now: call one of the offered tools.)"), "{prompt}");
    let mut ask = chat.clone();
    ask["max_tokens"] = json!(4);
    assert_eq!(s.post("/v1/chat/completions", &ask).0, 200);
    let mut image_only = chat.clone();
    image_only["messages"][3]["content"] = json!([{"type": "image_url", "image_url": {"url": "x"}}]);
    let (status, v) = s.post("/v1/chat/completions", &image_only);
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["param"], "messages[3].content[0]", "{v}");
}

/// ChatML whose generation prompt opens a thinking block, as reasoning
/// models' templates do (and which reads `</think>` in past turns).
const THINKING: &str = "{# past turns keep their <think>...</think> #}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}";

#[test]
fn a_reply_that_thinks_comes_back_as_a_thinking_block_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("thinking.jinja");
    std::fs::write(&file, THINKING).unwrap();
    let s = Server::start(&["-m", &tiny(), "-c", "1024", "-t", "2", "--chat-template-file", file.to_str().unwrap()]);
    let ask = json!({"model": "m", "max_tokens": 6, "temperature": 0,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [{"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "Add them.", "signature": "sig"}, {"type": "text", "text": "4."}]},
            {"role": "user", "content": "And 3 + 3?"}]});
    // Past thinking is rendered where the template reads it.
    let prompt = s.post("/v1/messages/apply-template", &ask).1["prompt"].as_str().unwrap().to_string();
    assert!(prompt.contains("<|im_start|>assistant\n<think>\nAdd them.\n</think>\n\n4.<|im_end|>"), "{prompt}");
    let (status, v) = s.post("/v1/messages", &ask);
    assert_eq!(status, 200, "{v}");
    // The prompt opened the thinking and 6 tokens do not close it: all thinking.
    let block = &v["content"][0];
    assert_eq!(block["type"], "thinking", "{v}");
    assert!(block["thinking"].is_string() && block["signature"].as_str().is_some_and(|s| !s.is_empty()), "{v}");
    let mut streamed = ask.clone();
    streamed["stream"] = json!(true);
    let r = request(
        &s.addr,
        "POST",
        "/v1/messages",
        &[("content-type", "application/json")],
        streamed.to_string().as_bytes(),
    );
    let ev = anthropic_events(&r.body);
    let start = ev.iter().find(|e| e["type"] == "content_block_start").expect("no block");
    assert_eq!(start["content_block"]["type"], "thinking", "{}", r.body);
    let kinds: Vec<&str> = ev.iter().filter_map(|e| e["delta"]["type"].as_str()).collect();
    assert_eq!(kinds.last(), Some(&"signature_delta"), "{kinds:?}");
    let thought: String = ev.iter().filter_map(|e| e["delta"]["thinking"].as_str()).collect();
    assert_eq!(thought, block["thinking"].as_str().unwrap(), "streamed and whole agree");
    // Without thinking asked for, the reply is text.
    let mut plain = ask.clone();
    plain.as_object_mut().unwrap().remove("thinking");
    let (status, v) = s.post("/v1/messages", &plain);
    assert_eq!((status, v["content"][0]["type"].as_str()), (200, Some("text")), "{v}");
}

#[test]
fn context_editing_clears_old_tool_results_and_the_next_request_meets_the_cache() {
    let s = Server::start(&["-m", &tiny(), "-c", "4096", "-t", "2"]);
    // About 460 tokens a read.
    let read = |i: usize| {
        format!(
            "src/mod{i}.rs:\n{}",
            (0..24).map(|l| format!("fn f{i}_{l}() -> u32 {{ {l} * {i} }}\n")).collect::<String>()
        )
    };
    let tool_use = |messages: &mut Vec<Value>, i: usize| {
        messages.push(json!({"role": "assistant", "content": [{"type": "text", "text": format!("Reading module {i}.")},
            {"type": "tool_use", "id": format!("toolu_{i:02}"), "name": "Read", "input": {"file_path": format!("src/mod{i}.rs")}}]}));
        messages.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": format!("toolu_{i:02}"), "content": read(i)}]}));
    };
    let mut messages = vec![json!({"role": "user", "content": "Read the modules and find the bug."})];
    for i in 0..6 {
        tool_use(&mut messages, i);
    }
    messages.push(json!({"role": "user", "content": "Which module has the bug?"}));
    // Past 2500 tokens, clear at least 800 (two reads), the last two uses kept.
    let body = |messages: &[Value]| {
        json!({"model": "m", "max_tokens": 8, "temperature": 0, "messages": messages,
            "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
            "context_management": {"edits": [{"type": "clear_tool_uses_20250919",
                "trigger": {"type": "input_tokens", "value": 2500}, "keep": {"type": "tool_uses", "value": 2},
                "clear_at_least": {"type": "input_tokens", "value": 800}}]}})
    };
    let prompt_of = |v: &Value| {
        v["usage"]["input_tokens"].as_u64().unwrap() + v["usage"]["cache_read_input_tokens"].as_u64().unwrap()
    };
    let cleared_uses = |v: &Value| v["context_management"]["applied_edits"][0]["cleared_tool_uses"].as_u64();
    let mut unmanaged = body(&messages);
    unmanaged.as_object_mut().unwrap().remove("context_management");
    let full = s.post("/v1/messages/count_tokens", &unmanaged).1["input_tokens"].as_u64().unwrap();
    assert!(full > 2500 + 100, "{full}");

    let (status, v) = s.post("/v1/messages", &body(&messages));
    assert_eq!(status, 200, "{v}");
    let edit = &v["context_management"]["applied_edits"][0];
    assert_eq!(edit["type"], "clear_tool_uses_20250919", "{v}");
    assert_eq!(cleared_uses(&v), Some(2), "the two oldest reach clear_at_least: {v}");
    let (p1, cleared) = (prompt_of(&v), edit["cleared_input_tokens"].as_u64().unwrap());
    eprintln!("context editing: {full} tokens as sent, {p1} after clearing {cleared}");
    assert!(cleared >= 800 && p1 + cleared <= full + 16 && p1 < 2500, "{full} {p1} {cleared}");
    // count_tokens counts the cleared form.
    assert_eq!(s.post("/v1/messages/count_tokens", &body(&messages)).1["input_tokens"].as_u64(), Some(p1));

    // The client's next request carries its full history and a new turn:
    // the server clears the same results from memory and prefills the turn only.
    let reply =
        |v: &Value| -> String { v["content"].as_array().unwrap().iter().filter_map(|b| b["text"].as_str()).collect() };
    messages.push(json!({"role": "assistant", "content": [{"type": "text", "text": reply(&v)}]}));
    messages.push(json!({"role": "user", "content": "And how do we fix it?"}));
    let (status, w) = s.post("/v1/messages", &body(&messages));
    assert_eq!(status, 200, "{w}");
    assert_eq!(cleared_uses(&w), Some(2), "{w}");
    let p2 = prompt_of(&w);
    let (reused, prefilled) =
        (w["decache"]["tokens_reused"].as_u64().unwrap(), w["timings"]["prompt_n"].as_u64().unwrap());
    eprintln!("next request: {p2} tokens, {reused} reused, {prefilled} prefilled ({})", w["decache"]);
    assert!(reused + 4 >= p1, "the earlier prompt is reused: {reused} of {p1}");
    assert!(prefilled < (p2 - p1) + 64, "only the new turn is prefilled: {prefilled} (new turn {})", p2 - p1);

    // Two more reads pass the trigger again, counted on the remembered
    // form: the next two oldest go, the first two stay cleared.
    // (The model answers the question with two reads.)
    for i in 6..8 {
        tool_use(&mut messages, i);
    }
    messages.push(json!({"role": "user", "content": "Now?"}));
    let (status, x) = s.post("/v1/messages", &body(&messages));
    assert_eq!(status, 200, "{x}");
    eprintln!("after two more reads: {} tokens, {}", prompt_of(&x), x["context_management"]);
    assert_eq!(cleared_uses(&x), Some(4), "{x}");
    assert!(prompt_of(&x) < 2500, "{}", prompt_of(&x));
}

#[test]
fn a_replaced_tool_result_is_evaluated_in_place_and_what_follows_it_reused() {
    // The client clears an old tool result to a placeholder (A B C -> A B' C D):
    // the placeholder is evaluated in place by the reuse, the answer after it
    // is reused, and only the new question goes through the prompt's prefill.
    let s = Server::start(&["-m", &model(), "-c", "2048", "-t", "2"]);
    let a = json!({"role": "system", "content": SYSTEM});
    let ask = json!({"role": "user", "content": "Why does the parser test fail? Look at the parser."});
    let call = json!({"role": "assistant", "content": "I will read src/parser.rs first."});
    let c = json!({"role": "assistant", "content": "The build function panics when the nesting is deeper than 64 levels, so the deep test fails."});
    chat(&s, json!([a, ask, call, {"role": "tool", "content": READ}, c]));
    let cleared = json!({"role": "tool", "content": "[Old tool result content cleared]"});
    let v = chat(&s, json!([a, ask, call, cleared, c, {"role": "user", "content": "How do I raise the limit?"}]));
    let d = &v["decache"];
    eprintln!("replaced tool result: {d}, timings {}", v["timings"]);
    assert_eq!((d["hit"].as_str(), d["spans_replaced"].as_u64()), (Some("subconscious"), Some(1)), "{v}");
    assert!(d["tokens_removed"].as_u64().unwrap() >= 40, "the read is deleted: {d}");
    // Prefilled: the placeholder (evaluated in place) and the new question,
    // about 25 tokens; prefilling the answer after the placeholder again
    // would add its 31.
    let prompt = v["timings"]["prompt_n"].as_u64().unwrap();
    assert!(prompt < 40, "the answer after the placeholder is not prefilled again: {}", v["timings"]);
    assert!(v["timings"]["cache_n"].as_u64().unwrap() >= 80, "the prefix and the answer are reused: {}", v["timings"]);
}

#[test]
fn a_second_client_goes_on_from_the_system_prompt_another_slot_computed() {
    let s = Server::start(&["-m", &model(), "-c", "2048", "-t", "2", "-np", "2"]);
    // A long system prompt both clients send (a harness's instructions and tools).
    let system = format!("{SYSTEM}\n{}", READ.repeat(3));
    let ask = |q: &str, n: u32| json!({"messages": [{"role": "system", "content": system}, {"role": "user", "content": q}], "max_tokens": n, "temperature": 0});
    let mut first = ask("Why does the parser test fail?", 200);
    first["stream"] = json!(true);
    let mut a = Streaming::post(&s.addr, "/v1/chat/completions", &first);
    // The second comes while the first is generating (its first tokens have
    // come): it takes the other slot, which holds nothing, and goes on from
    // the first slot's cells.
    a.wait_for("data: ", 3);
    let (status, b) = s.post("/v1/chat/completions", &ask("And the lexer test?", 16));
    assert_eq!(status, 200, "{b}");
    let a = a.finish();
    assert_eq!(a.status, 200, "{}", a.body);
    let events: Vec<Value> = sse_data(&a.body).iter().filter_map(|d| serde_json::from_str(d).ok()).collect();
    let a = events.iter().rev().find(|e| e.get("decache").is_some()).expect("the last event says which slot");
    assert_ne!(a["decache"]["slot"], b["decache"]["slot"], "the first slot was busy");
    assert_eq!(b["decache"]["from"], "shared", "{b}");
    let reused = b["decache"]["tokens_reused"].as_u64().unwrap();
    let prompt = b["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(reused > prompt / 2 && reused < prompt, "reused {reused} of {prompt} prompt tokens");
    let (_, m) = s.get("/metrics");
    let metric = |name: &str| -> f64 {
        let line =
            m.lines().find(|l| l.starts_with(&format!("decache:{name} "))).unwrap_or_else(|| panic!("{name}: {m}"));
        line.split(' ').nth(1).unwrap().parse().unwrap()
    };
    assert!(metric("shared_prefix_tokens_total") >= (prompt / 2) as f64, "{m}");
    let (batches, steps) = (metric("batches_total"), metric("batched_steps_total"));
    assert!(
        steps > batches,
        "the two slots' steps were computed together at times ({steps} steps in {batches} graphs)"
    );
}
