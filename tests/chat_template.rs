//! Chat templates: SmolLM2's own template (read from the model file) renders
//! ChatML; templates using Python string methods, `namespace`, `tojson`,
//! `strftime_now` and Hugging Face's block trimming render as Hugging Face
//! renders them; broken templates give errors that name the problem.

mod common;
use decache::gguf::GgufFile;
use decache::tokenizer::{ChatMessage, ChatTemplate, Tokenizer, TokenizerError, VocabSpec};

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "You are a terse assistant."),
        ChatMessage::new("user", "What is 2+2?"),
        ChatMessage::new("assistant", "4."),
        ChatMessage::new("user", "And 3+3?"),
    ]
}

fn smollm2_template() -> String {
    let path = common::smollm2();
    let file = GgufFile::open(&path, false).unwrap();
    let tok = Tokenizer::from_spec(VocabSpec::from_gguf(&file).unwrap()).unwrap();
    tok.chat_template().expect("SmolLM2 has a chat template").to_string()
}

#[test]
fn smollm2_template_renders_chatml() {
    let t = ChatTemplate::new(&smollm2_template()).unwrap();
    let out = t.clone().with_pieces("<|im_start|>", "<|im_end|>").render(&conversation(), true).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n\
         <|im_start|>user\nWhat is 2+2?<|im_end|>\n\
         <|im_start|>assistant\n4.<|im_end|>\n\
         <|im_start|>user\nAnd 3+3?<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    // The same conversation through the built-in ChatML fallback.
    assert_eq!(ChatTemplate::chatml().render(&conversation(), true).unwrap(), out);

    // Without a system message the template supplies its own.
    let out = t.render(&[ChatMessage::new("user", "hi")], false).unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nhi<|im_end|>\n"
    );
}

#[test]
fn python_methods_render() {
    let src = "{% for m in messages %}\
{% if m.content.strip().startswith('/') %}[cmd {{ m.content.strip()[1:].split(' ')[0] }}]\
{% else %}{{ m.role.upper() }}: {{ m.content.strip().replace('  ', ' ') }}|{{ m.content.split()|length }}\
{% endif %}{{ '\n' }}{% endfor %}";
    let t = ChatTemplate::new(src).unwrap();
    let msgs = [ChatMessage::new("user", "  hello   world  "), ChatMessage::new("user", " /run tests now")];
    assert_eq!(t.render(&msgs, false).unwrap(), "USER: hello  world|2\n[cmd run]\n");

    let src = "{{ 'a,b,,c'.split(',')|join('|') }} {% if 'Title Case'.lower().endswith('case') %}yes{% endif %} \
{{ ' x '.lstrip() ~ '.' }} {% for k, v in {'k': 1}.items() %}{{ k }}={{ v }}{% endfor %} {{ 'abc'.find('c') }} \
{{ '{}-{}'.format(1, 2) }} {{ 'a b'.title() }}";
    let out = ChatTemplate::new(src).unwrap().render(&[], false).unwrap();
    assert_eq!(out, "a|b||c yes x . k=1 2 1-2 A B");
}

#[test]
fn hugging_face_features_render() {
    // trim_blocks + lstrip_blocks, namespace, loop variables, bos_token.
    let src = "{{ bos_token }}\n{% set ns = namespace(n=0) %}\n{% for m in messages %}\n    {% set ns.n = ns.n + 1 %}\n{{ loop.index }}:{{ m.role }}\n{% endfor %}\n{{ ns.n }}{% if add_generation_prompt %}+{% endif %}";
    let t = ChatTemplate::new(src).unwrap().with_pieces("<s>", "</s>");
    assert_eq!(t.render(&conversation(), true).unwrap(), "<s>\n1:system\n2:user\n3:assistant\n4:user\n4+");

    // tojson like Python's json.dumps(ensure_ascii=False).
    let t = ChatTemplate::new("{{ messages[1]|tojson }}").unwrap();
    assert_eq!(t.render(&conversation(), false).unwrap(), "{\"role\": \"user\", \"content\": \"What is 2+2?\"}");

    // strftime_now gives a date in the requested format.
    let t = ChatTemplate::new("{{ strftime_now('%Y-%m-%d') }}").unwrap();
    let out = t.render(&[], false).unwrap();
    assert!(out.len() == 10 && out.as_bytes()[4] == b'-' && out[..4].parse::<u32>().unwrap() >= 2024, "{out}");
}

#[test]
fn broken_templates_give_errors_not_panics() {
    let err = |src: &str| match ChatTemplate::new(src) {
        Err(TokenizerError::Template(msg)) => msg,
        Err(e) => panic!("wrong error kind: {e}"),
        Ok(_) => panic!("{src:?} compiled"),
    };
    let msg = err("{% for m in messages %}{{ m.content }}");
    assert!(msg.contains("syntax error") && msg.contains("line 1"), "{msg}");
    let msg = err("{{ messages[0] ");
    assert!(msg.contains("syntax error"), "{msg}");
    let msg = err("{% if %}x{% endif %}");
    assert!(msg.contains("syntax error"), "{msg}");

    // Errors at render time: raise_exception, unknown filters, bad calls.
    let t = ChatTemplate::new(
        "{% if messages[0].role != 'system' %}{{ raise_exception('first message must be system') }}{% endif %}",
    )
    .unwrap();
    let e = t.render(&[ChatMessage::new("user", "x")], false).unwrap_err().to_string();
    assert!(e.contains("first message must be system"), "{e}");
    let t = ChatTemplate::new("{{ messages|no_such_filter }}").unwrap_or_else(|e| panic!("{e}"));
    let e = t.render(&[], false);
    assert!(
        matches!(&e, Err(TokenizerError::Template(m)) if m.contains("no_such_filter") || m.contains("unknown filter")),
        "{e:?}"
    );
    let t = ChatTemplate::new("{{ messages[5].content.strip() }}").unwrap();
    assert!(t.render(&conversation(), false).is_err());
}

#[test]
fn gemma3_without_a_template_gets_gemma_turns() {
    // gemma-3-270m carries no template; Gemma's format is the fallback: the
    // system prompt opens the first user turn, the assistant is "model".
    let path = common::gemma3();
    let file = GgufFile::open(&path, false).unwrap();
    let tok = Tokenizer::from_spec(VocabSpec::from_gguf(&file).unwrap()).unwrap();
    assert!(tok.chat_template().is_none(), "the file now has a template: test it instead");
    let t = ChatTemplate::default_for("gemma3").with_pieces("<bos>", "<eos>");
    let out = t.render(&conversation(), true).unwrap();
    assert_eq!(
        out,
        "<start_of_turn>user\nYou are a terse assistant.\n\nWhat is 2+2?<end_of_turn>\n\
         <start_of_turn>model\n4.<end_of_turn>\n\
         <start_of_turn>user\nAnd 3+3?<end_of_turn>\n\
         <start_of_turn>model\n"
    );
}

#[test]
fn hostile_templates_stop_with_errors_in_bounded_time() {
    let render = |src: &str| -> String {
        let t = ChatTemplate::new(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let t0 = std::time::Instant::now();
        let r = t.render(&conversation(), true);
        let took = t0.elapsed();
        assert!(took < std::time::Duration::from_secs(20), "{src}: took {took:?}");
        match r {
            Err(e) => e.to_string(),
            Ok(out) => panic!("{src}: rendered {} bytes", out.len()),
        }
    };
    // Endless work: nested loops of 10^10 steps, unbounded recursion.
    let e = render("{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}");
    assert!(e.contains("ran too long"), "{e}");
    let e = render("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}");
    assert!(!e.is_empty(), "{e}");
    // Reading files: there is no loader, so nothing outside the template is reachable.
    for src in ["{% include '/etc/passwd' %}", "{% import '/etc/hostname' as h %}", "{% extends '../../etc/passwd' %}"]
    {
        let e = render(src);
        assert!(e.contains("not found") || e.contains("template"), "{src}: {e}");
    }
}

#[test]
fn long_conversations_stay_within_the_template_step_budget() {
    // 20,000 messages through SmolLM2's own template: far below the budget.
    let t = ChatTemplate::new(&smollm2_template()).unwrap();
    let msgs: Vec<ChatMessage> = (0..20_000)
        .map(|i| ChatMessage::new(if i % 2 == 0 { "user" } else { "assistant" }, format!("message {i}")))
        .collect();
    let out = t.render(&msgs, true).unwrap();
    assert!(out.contains("message 19999") && out.ends_with("<|im_start|>assistant\n"));
}

/// The chat templates llama.cpp tests with (its sources, `make llama-src`).
fn llama_template(name: &str) -> ChatTemplate {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/llama.cpp-0.3.36/llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates");
    let src = std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("{}: {e} (make llama-src fetches it)", dir.display()));
    ChatTemplate::new(&src).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Qwen3.5's and Gemma 4's own templates write an assistant's tool calls
/// (from OpenAI-shaped `tool_calls`); what they write parses back to the
/// same calls, so a model that answers as its template taught it is
/// understood.
#[test]
fn the_2026_families_tool_calls_parse_back_from_their_templates() {
    use serde_json::json;
    let args = json!({"city": "Paris", "days": 2, "deep": {"units": "c", "flags": [true, false]}});
    let tools =
        vec![json!({"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
        "deep": {"type": "object"}}, "required": ["city"]}}})];
    let messages = vec![
        json!({"role": "system", "content": "You are terse."}),
        json!({"role": "user", "content": "Weather in Paris?"}),
        json!({"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": args}}]}),
    ];
    for (name, open) in [("Qwen3.5-4B.jinja", "<tool_call>"), ("google-gemma-4-31B-it.jinja", "<|tool_call>")] {
        let t = llama_template(name);
        let text = t.render_json(&messages, Some(&tools), false).unwrap_or_else(|e| panic!("{name}: {e}"));
        let at = text.rfind(open).unwrap_or_else(|| panic!("{name} wrote no call: {text}"));
        let p = decache::toolcall::parse(&text[at..]);
        assert!(p.malformed.is_empty(), "{name}: {:?} in {}", p.malformed, &text[at..]);
        assert_eq!(p.calls.len(), 1, "{name}: {}", &text[at..]);
        assert_eq!(
            (p.calls[0].name.as_str(), &p.calls[0].arguments),
            ("get_weather", &args),
            "{name}: {}",
            &text[at..]
        );
    }
}
