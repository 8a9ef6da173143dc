//! Writes the seed corpora of the fuzz targets under `fuzz/seeds/<target>/`
//! (committed; `make fuzz` starts from them, `tests/fuzz_corpus.rs` replays
//! them). Run from the repository root: `make fuzz-seeds`.
#[path = "../tests/common/gguf_writer.rs"]
mod gguf_writer;
use gguf_writer::*;
use std::path::Path;

fn put(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new("fuzz/seeds").join(target);
    std::fs::create_dir_all(&dir).expect("seed dir");
    std::fs::write(dir.join(name), bytes).expect("write seed");
}

fn main() {
    // GGUF: the tiny model whole, and its metadata alone (no tensors).
    let full = tiny_llama();
    put("gguf", "tiny-llama", &full.build().0);
    let mut meta = tiny_llama();
    meta.tensors.clear();
    let meta_bytes = meta.build().0;
    put("gguf", "tiny-llama-metadata", &meta_bytes);
    put("tokenizer", "tiny-bpe", &meta_bytes);
    let mut spm = tiny_llama();
    spm.tensors.clear();
    spm.set("tokenizer.ggml.model", Value::str("llama"))
        .set("tokenizer.ggml.scores", Value::Array(vt::F32, vec![Value::F32(0.0); tiny::N_VOCAB as usize]));
    put("tokenizer", "tiny-spm", &spm.build().0);

    // Templates: ChatML with tools, and Gemma's turns, each with messages after a NUL.
    let msgs = "You are terse.\u{1}Hi {{ 7*7 }} <|im_end|>\u{1}Hello.\u{1}{\"result\": 1}";
    let chatml = "{%- if tools %}{{ tools | tojson }}{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    put("template", "chatml", format!("{chatml}\0{msgs}").as_bytes());
    let gemma = "{{ bos_token }}{% for m in messages %}{% if m.role == 'assistant' %}{% set r = 'model' %}{% else %}{% set r = m.role %}{% endif %}<start_of_turn>{{ r }}\n{{ m.content }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";
    put("template", "gemma", format!("{gemma}\0{msgs}").as_bytes());
    put(
        "template",
        "loop",
        "{% for a in range(10) %}{% for b in range(10) %}{{ a * b }}{% endfor %}{% endfor %}\0x".as_bytes(),
    );

    // Transcripts: the shipped ones.
    for f in std::fs::read_dir("tests/transcripts").expect("tests/transcripts").flatten() {
        put("transcript", &f.file_name().to_string_lossy(), &std::fs::read(f.path()).expect("read transcript"));
    }

    // Tool calls as models write them.
    put("toolcall", "hermes", b"Let me look.\n<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"src/main.rs\"}}\n</tool_call>");
    put("toolcall", "two", b"<tool_call>{\"name\":\"grep\",\"arguments\":{\"pattern\":\"fn \"}}</tool_call><tool_call>{\"name\":\"todo\",\"arguments\":{\"items\":[]}}</tool_call>");
    put("toolcall", "openai", br#"[{"id":"c1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]"#);

    // Request bodies; the first byte picks the endpoint (0 chat, 1 messages, 2 completions, 3 tools, 4 responses).
    let chat = r#"{"model":"m","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":[{"type":"text","text":"hi"}]},{"role":"assistant","tool_calls":[{"id":"1","type":"function","function":{"name":"f","arguments":"{}"}}]},{"role":"tool","tool_call_id":"1","content":"ok"}],"tools":[{"type":"function","function":{"name":"f","parameters":{}}}],"temperature":0.2,"top_p":0.9,"max_tokens":16,"stop":["\n\n"],"stream":true,"stream_options":{"include_usage":true}}"#;
    let messages = r#"{"model":"m","max_tokens":16,"system":"Be brief.","messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{"a":1}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}],"tools":[{"name":"f","input_schema":{"type":"object"}}],"stop_sequences":["END"]}"#;
    let completion = r#"{"prompt":[1,2,3],"max_tokens":4,"temperature":0,"seed":7}"#;
    let tools = r#"{"tools":[{"name":"f"},{"function":{"name":"g"}},{}]}"#;
    for (i, body) in [chat, messages, completion, tools].iter().enumerate() {
        let mut b = vec![i as u8];
        b.extend_from_slice(body.as_bytes());
        put("http_body", &format!("endpoint-{i}"), &b);
    }
    // Responses API bodies (first byte 4): what Codex sends, every item type, odd shapes.
    let codex = r#"{"model":"gpt-5-codex","instructions":"You are Codex.","input":[{"type":"message","role":"developer","content":[{"type":"input_text","text":"sandbox"}]},{"type":"message","role":"user","content":[{"type":"input_text","text":"fix it"}]},{"type":"reasoning","id":"rs_1","summary":[{"type":"summary_text","text":"think"}],"encrypted_content":"gAAA"},{"type":"function_call","call_id":"call_1","name":"shell","arguments":"{\"command\":[\"ls\"]}"},{"type":"function_call_output","call_id":"call_1","output":"a.rs"}],"tools":[{"type":"function","name":"shell","strict":false,"parameters":{"type":"object"}},{"type":"web_search"},{"type":"local_shell"},{"type":"custom","name":"apply_patch","format":{"type":"grammar"}}],"tool_choice":"auto","parallel_tool_calls":false,"reasoning":{"effort":"medium","summary":"auto"},"store":false,"stream":true,"include":["reasoning.encrypted_content"],"prompt_cache_key":"k","text":{"verbosity":"low"}}"#;
    let items = r#"{"input":[{"role":"user","content":[{"type":"input_text","text":"see"},{"type":"input_image","image_url":"data:x"},{"type":"input_file","filename":"a.pdf"}]},{"type":"message","role":"assistant","content":[{"type":"output_text","text":"ok"},{"type":"refusal","refusal":"no"}]},{"type":"custom_tool_call","call_id":"c","name":"apply_patch","input":"*** Begin"},{"type":"custom_tool_call_output","call_id":"c","output":[{"type":"input_text","text":"done"}]},{"type":"local_shell_call","call_id":"s","action":{"type":"exec","command":["ls"]}},{"type":"local_shell_call_output","call_id":"s","output":"x"},{"type":"web_search_call","id":"w"},{"type":"item_reference","id":"msg_1"},{"type":"input_text","text":"bare"}],"tool_choice":{"type":"function","name":"f"},"tools":[{"type":"function","name":"f"}],"max_output_tokens":8,"temperature":0.5,"top_p":0.9}"#;
    let odd = r#"{"input":[{"role":"user","content":[{"type":"input_image"}]},{"type":"function_call","name":"f","arguments":"[1"},{"content":"no role"},7,null],"instructions":[{"role":"system","content":"as items"}],"tool_choice":{"type":"allowed_tools","tools":[{"type":"function","name":"g"}]},"previous_response_id":"resp_x","max_output_tokens":0}"#;
    for (i, body) in [codex, items, odd].iter().enumerate() {
        let mut b = vec![4u8];
        b.extend_from_slice(body.as_bytes());
        put("http_body", &format!("responses-{i}"), &b);
    }
    // What today's clients send: Claude Code's shape (billing header, thinking,
    // an image in a tool result, cache_control, deferred and server tools,
    // context editing), and chat completions with an image in a tool message
    // and a required call. 0x81: endpoint 1 rendered with thinking.
    let claude_code = r#"{"model":"claude-sonnet-4-5","max_tokens":32000,"stream":true,"metadata":{"user_id":"u1"},"system":[{"type":"text","text":"x-anthropic-billing-header: cc_version=2.1.3.a1b; cc_entrypoint=cli; cch=4f2e1;"},{"type":"text","text":"You are Claude Code.","cache_control":{"type":"ephemeral"}}],"thinking":{"type":"enabled","budget_tokens":31999},"tools":[{"name":"Read","input_schema":{"type":"object"},"cache_control":{"type":"ephemeral"}},{"name":"mcp__docs__search","input_schema":{"type":"object"},"defer_loading":true},{"type":"web_search_20250305","name":"web_search","max_uses":5}],"tool_choice":{"type":"any","disable_parallel_tool_use":true},"messages":[{"role":"user","content":[{"type":"text","text":"Why?","cache_control":{"type":"ephemeral"}}]},{"role":"system","content":"<env>cwd: /repo</env>"},{"role":"assistant","content":[{"type":"thinking","thinking":"Read it.","signature":"Eq"},{"type":"redacted_thinking","data":"Em"},{"type":"tool_use","id":"toolu_01","name":"Read","input":{"file_path":"/a"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","is_error":true,"content":[{"type":"text","text":"no file"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBO"}},{"type":"tool_reference","tool_name":"mcp__docs__search"}]},{"type":"text","text":"<system-reminder>go on</system-reminder>"}]}],"context_management":{"edits":[{"type":"clear_thinking_20251015","keep":{"type":"thinking_turns","value":1}},{"type":"clear_tool_uses_20250919","trigger":{"type":"input_tokens","value":1},"keep":{"type":"tool_uses","value":0},"clear_at_least":{"type":"input_tokens","value":1},"exclude_tools":["Grep"],"clear_tool_inputs":true}]}}"#;
    let mut b = vec![0x81u8];
    b.extend_from_slice(claude_code.as_bytes());
    put("http_body", "messages-claude-code", &b);
    let edits = r#"{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"go"},{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"Read","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"a b c d e f"}]},{"role":"assistant","content":[{"type":"tool_use","id":"t2","name":"Read","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t2","content":"g h"}]}],"tools":[{"name":"Read"}],"context_management":{"edits":[{"type":"clear_tool_uses_20250919","trigger":{"type":"tool_uses","value":1},"keep":{"type":"tool_uses","value":1},"clear_tool_inputs":["Read"]}]}}"#;
    let mut b = vec![1u8];
    b.extend_from_slice(edits.as_bytes());
    put("http_body", "messages-context-edits", &b);
    let parts = r#"{"messages":[{"role":"user","content":"shot"},{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"shot","arguments":""}}]},{"role":"tool","tool_call_id":"c1","content":[{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}},{"type":"text","text":"ok"}]},{"role":"user","content":[{"type":"text","text":"and "},{"type":"input_audio","input_audio":{"data":"","format":"wav"}}]}],"tools":[{"type":"function","function":{"name":"shot","parameters":{}}}],"tool_choice":{"type":"function","function":{"name":"shot"}},"parallel_tool_calls":false}"#;
    let mut b = vec![0u8];
    b.extend_from_slice(parts.as_bytes());
    put("http_body", "chat-parts-tool-choice", &b);
    put(
        "toolcall",
        "thinking",
        b"<think>\nThe user wants 4.\n</think>\n\nIt is 4.<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>",
    );
}
