use super::*;

fn call(name: &str, arguments: Value) -> ToolCall {
    ToolCall { name: name.into(), arguments }
}

/// The reply streamed in pieces of `n` characters, joined back.
fn streamed(reply: &str, n: usize) -> Reply {
    let mut s = Splitter::new();
    let chars: Vec<char> = reply.chars().collect();
    let mut pieces: Vec<Piece> = chars.chunks(n).flat_map(|c| s.push(&c.iter().collect::<String>())).collect();
    pieces.extend(s.finish());
    join(pieces)
}

/// `parse(reply)`, checked against the same reply streamed in pieces of 1 to 7 characters.
fn split(reply: &str) -> Reply {
    let whole = parse(reply);
    for n in 1..8 {
        assert_eq!(streamed(reply, n), whole, "{reply:?} in pieces of {n} characters");
    }
    whole
}

const WEATHER: &str = "{\"city\": \"Paris\"}";

#[test]
fn a_final_answer_alone_is_text() {
    let r = split("<|channel|>final<|message|>It is 4.");
    assert_eq!((r.reasoning, r.parsed.text.as_str(), r.parsed.calls.len()), (None, "It is 4.", 0));
    let r = split("<|channel|>final<|message|>Ünïcode ✓<|return|>");
    assert_eq!(r.parsed.text, "Ünïcode ✓");
    // No harmony at all: plain text, whatever it holds.
    assert_eq!(split("Just text, <b>bold</b>.").parsed.text, "Just text, <b>bold</b>.");
    assert_eq!(split("<|cha").parsed.text, "<|cha");
    assert_eq!(split(" tomorrow").parsed.text, " tomorrow");
}

#[test]
fn analysis_then_final() {
    let r = split(
        "<|channel|>analysis<|message|>The user wants 2+2. That is 4.<|end|><|start|>assistant<|channel|>final<|message|>It is 4.<|return|>",
    );
    assert_eq!(r.reasoning.as_deref(), Some("The user wants 2+2. That is 4."));
    assert_eq!(r.parsed.text, "It is 4.");
    assert!(r.parsed.calls.is_empty() && r.parsed.malformed.is_empty());
    // An empty analysis is still reasoning (empty); two are one, separated.
    let r = split("<|channel|>analysis<|message|><|end|><|start|>assistant<|channel|>final<|message|>ok");
    assert_eq!((r.reasoning.as_deref(), r.parsed.text.as_str()), (Some(""), "ok"));
    let r = split("<|channel|>analysis<|message|>one<|end|><|start|>assistant<|channel|>analysis<|message|>two<|end|>");
    assert_eq!((r.reasoning.as_deref(), r.parsed.text.as_str()), (Some("one\n\ntwo"), ""));
}

#[test]
fn calls_with_the_recipient_after_or_before_the_channel() {
    let analysis = "<|channel|>analysis<|message|>Need the weather.<|end|>";
    for head in [
        "<|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>",
        "<|start|>assistant<|channel|>commentary to=functions.get_weather<|message|>",
        "<|start|>assistant to=functions.get_weather<|channel|>commentary json<|message|>",
        "<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>",
    ] {
        for end in ["<|call|>", ""] {
            let reply = format!("{analysis}{head}{WEATHER}{end}");
            let r = split(&reply);
            assert_eq!(r.reasoning.as_deref(), Some("Need the weather."), "{reply}");
            assert_eq!(r.parsed.text, "", "{reply}");
            assert_eq!(r.parsed.calls, vec![call("get_weather", json!({"city": "Paris"}))], "{reply}");
        }
    }
    // The first message may lead with its recipient (right after the
    // generation prompt `<|start|>assistant`); a call without arguments.
    let r = split(" to=functions.get_weather<|channel|>commentary json<|message|>{\"city\":\"Oslo\"}<|call|>");
    assert_eq!(r.parsed.calls, vec![call("get_weather", json!({"city": "Oslo"}))]);
    assert_eq!(r.reasoning, None);
    let r = split("<|channel|>commentary to=functions.list_files <|constrain|>json<|message|><|call|>");
    assert_eq!(r.parsed.calls, vec![call("list_files", json!({}))]);
}

#[test]
fn two_calls_and_a_preamble() {
    let r = split(
        "<|channel|>commentary to=functions.read <|constrain|>json<|message|>{\"path\": \"a.rs\"}<|call|>\
         <|start|>assistant<|channel|>commentary to=functions.read <|constrain|>json<|message|>{\"path\": \"b.rs\"}<|call|>",
    );
    assert_eq!(r.parsed.calls, vec![call("read", json!({"path": "a.rs"})), call("read", json!({"path": "b.rs"}))]);
    let r = split(
        "<|channel|>analysis<|message|>Look it up.<|end|><|start|>assistant<|channel|>commentary<|message|>Let me check the weather.<|end|>\
         <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": \"Paris\"}<|call|>",
    );
    assert_eq!(r.reasoning.as_deref(), Some("Look it up."));
    assert_eq!(r.parsed.text, "Let me check the weather.", "a commentary preamble is text for the user");
    assert_eq!(r.parsed.calls, vec![call("get_weather", json!({"city": "Paris"}))]);
    // A preamble and a final answer are two paragraphs.
    let r = split("<|channel|>commentary<|message|>First.<|end|><|start|>assistant<|channel|>final<|message|>Second.");
    assert_eq!(r.parsed.text, "First.\n\nSecond.");
}

#[test]
fn malformed_arguments_are_named_not_panicked_on() {
    let r =
        split("<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>{\"city\": Paris}<|call|>");
    assert!(r.parsed.calls.is_empty());
    assert_eq!(r.parsed.malformed.len(), 1);
    let m = &r.parsed.malformed[0];
    assert!(
        m.starts_with("tool call 1 (get_weather): its arguments are not valid JSON (expected value at line 1"),
        "{m}"
    );
    assert!(m.ends_with("{\"city\": Paris}"), "{m}");
    assert_eq!(r.parsed.text, "{\"city\": Paris}", "the body is kept as text");
    let r = split(
        "<|channel|>commentary to=functions.a<|message|>{}<|call|><|start|>assistant<|channel|>commentary to=functions.b<|message|>[1, 2]",
    );
    assert_eq!(r.parsed.calls, vec![call("a", json!({}))]);
    assert_eq!(r.parsed.malformed, vec!["tool call 2 (b): its arguments must be a JSON object, not an array: [1, 2]"]);
}

#[test]
fn a_reply_cut_short_gives_what_it_has() {
    let r = split("<|channel|>analysis<|message|>Thinking about");
    assert_eq!((r.reasoning.as_deref(), r.parsed.text.as_str()), (Some("Thinking about"), ""));
    let r = split("<|channel|>analysis<|message|>Done.<|end|><|start|>assistant<|channel|>fin");
    assert_eq!((r.reasoning.as_deref(), r.parsed.text.as_str()), (Some("Done."), ""), "a header cut short is dropped");
    let r = split("<|channel|>ana");
    assert_eq!(r, Reply::default());
    let r = split("<|channel|>final<|message|>Half an ans<|");
    assert_eq!(r.parsed.text, "Half an ans<|", "a marker that never came is text");
    let r =
        split("<|channel|>commentary to=functions.write <|constrain|>json<|message|>{\"path\": \"a\", \"text\": \"hel");
    assert!(r.parsed.calls.is_empty());
    assert!(
        r.parsed.malformed[0].starts_with("tool call 1 (write): its arguments are not valid JSON (EOF while parsing")
    );
}

#[test]
fn other_roles_are_dropped_and_other_recipients_are_calls() {
    // The model running on into the tool's answer or the user's turn.
    let r = split(
        "<|channel|>final<|message|>Hi.<|end|><|start|>functions.lookup to=assistant<|channel|>commentary<|message|>\"x\"<|end|><|start|>user<|message|>more",
    );
    assert_eq!((r.parsed.text.as_str(), r.parsed.calls.len()), ("Hi.", 0));
    let r = split("<|channel|>analysis to=python code<|message|>print(1)<|call|>");
    assert!(r.parsed.calls.is_empty() && r.parsed.malformed[0].starts_with("tool call 1 (python): its arguments"));
    // A message whose end was left out ends where the next one begins.
    let r = split("<|channel|>analysis<|message|>a<|channel|>final<|message|>b");
    assert_eq!((r.reasoning.as_deref(), r.parsed.text.as_str()), (Some("a"), "b"));
}

#[test]
fn streaming_gives_reasoning_and_text_early_and_holds_calls() {
    let mut s = Splitter::new();
    let mut got = Vec::new();
    for c in "<|channel|>analysis<|message|>Hmm<|end|><|start|>assistant<|channel|>final<|message|>Yes".chars() {
        got.extend(s.push(&c.to_string()));
    }
    assert!(got.contains(&Piece::Reasoning("H".into())), "reasoning streams: {got:?}");
    assert!(got.contains(&Piece::EndReasoning) && got.contains(&Piece::Text("Y".into())), "{got:?}");
    assert_eq!(s.finish(), vec![], "nothing held at the end");
    // A call's body comes out only when it closes.
    let mut s = Splitter::new();
    let head = "<|channel|>commentary to=functions.get_weather <|constrain|>json<|message|>";
    let mut got = s.push(head);
    got.extend(s.push("{\"city\": "));
    got.extend(s.push("\"Paris\"}"));
    assert_eq!(got, vec![], "held: {got:?}");
    assert_eq!(s.push("<|call|>"), vec![Piece::Call(call("get_weather", json!({"city": "Paris"})))]);
    assert!(is_harmony("{{- '<|start|>assistant<|channel|>final<|message|>' + m.content }}"));
    assert!(!is_harmony("{{- '<|im_start|>assistant\\n' }}"));
}

#[test]
fn hermes_calls_in_the_text_count_where_harmony_made_none() {
    let r = parse_with_hermes(
        "<|channel|>analysis<|message|>Use the tool.<|end|><|start|>assistant<|channel|>final<|message|><tool_call>{\"name\": \"read\", \"arguments\": {\"path\": \"a\"}}</tool_call>",
    );
    assert_eq!(r.reasoning.as_deref(), Some("Use the tool."));
    assert_eq!((r.parsed.text.as_str(), r.parsed.calls.clone()), ("", vec![call("read", json!({"path": "a"}))]));
    let r = parse_with_hermes("<|channel|>final<|message|>No call.");
    assert_eq!((r.parsed.text.as_str(), r.parsed.calls.len()), ("No call.", 0));
}
