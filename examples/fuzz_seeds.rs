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
}
