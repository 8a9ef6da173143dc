//! The fuzz harnesses: one function per target, each taking arbitrary bytes.
//! `fuzz_targets/*.rs` hand them to libFuzzer (`make fuzz`); the main test
//! suite (`tests/fuzz_corpus.rs`) runs them over the committed seeds and crash
//! reproducers on stable Rust. They return normally on any input: a panic,
//! an abort, a leak or a hang is a bug.
use decache::sampling::SamplingParams;
use decache::server::{anthropic, request, responses};
use decache::tokenizer::{ChatMessage, ChatTemplate};
use std::path::PathBuf;
use std::sync::OnceLock;

/// A per-process scratch file in memory-backed storage, for the parsers
/// that read from a path.
fn scratch(ext: &str) -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let base =
            if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let d = base.join(format!("decache-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    });
    dir.join(format!("input.{ext}"))
}

/// The GGUF container parser and the model loader (metadata, tensor table,
/// shapes, the tokenizer built from metadata) on arbitrary bytes: errors,
/// never a crash, a leak or a hang.
pub fn gguf(data: &[u8]) {
    let path = scratch("gguf");
    std::fs::write(&path, data).expect("write scratch");
    if decache::gguf::GgufFile::open(&path, true).is_ok() {
        let opts = decache::model::LoadOptions { no_mmap: true, extra_buffers: false, ..Default::default() };
        let _ = decache::model::Model::load(&path, &opts);
    }
}

/// Tokenizer construction from GGUF metadata and encoding with it: the
/// input is a small GGUF (seeded with valid BPE and SentencePiece vocabularies)
/// whose metadata the fuzzer bends; if it loads, its tokenizer encodes and
/// decodes the file's own bytes as text.
pub fn tokenizer(data: &[u8]) {
    let path = scratch("tok.gguf");
    std::fs::write(&path, data).expect("write scratch");
    let Ok(file) = decache::gguf::GgufFile::open(&path, true) else { return };
    let Ok(spec) = decache::tokenizer::VocabSpec::from_gguf(&file) else { return };
    let Ok(tok) = decache::tokenizer::Tokenizer::from_spec(spec) else { return };
    let text = String::from_utf8_lossy(&data[data.len().saturating_sub(256)..]);
    if let Ok(ids) = tok.encode(&text, true, true) {
        for id in ids {
            let _ = tok.token_to_piece(id, true);
        }
    }
}

/// Chat-template rendering: a template and hostile messages from the same
/// input (split at the first NUL), rendered under the step budget.
pub fn chat_template(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (src, rest) = text.split_once('\0').unwrap_or((&text, ""));
    let Ok(t) = ChatTemplate::new(src).map(|t| t.with_pieces("<s>", "</s>")) else { return };
    let roles = ["system", "user", "assistant", "tool", "{{", "\u{0}"];
    let msgs: Vec<ChatMessage> =
        rest.split('\u{1}').enumerate().map(|(i, c)| ChatMessage::new(roles[i % roles.len()], c)).collect();
    let _ = t.render(&msgs, true);
}

/// Transcript reading: arbitrary bytes as a transcript file, every entry read.
pub fn transcript(data: &[u8]) {
    let path = scratch("jsonl");
    std::fs::write(&path, data).expect("write scratch");
    if let Ok(t) = decache::transcript::read(&path) {
        assert!(t.entries.iter().all(|(line, _)| *line >= 2), "an entry on the header's line");
    }
}

/// Tool-call parsing: a model's reply as text, whole and streamed through
/// the filter in pieces, and tool calls in OpenAI's JSON shape.
pub fn toolcall(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = anthropic::thinking::split(&text, data.first().is_some_and(|b| b & 1 == 1));
    let _ = decache::toolcall::parse(&text);
    let _ = decache::toolcall::may_be_call(&text);
    let mut f = decache::toolcall::CallFilter::new(true);
    let cut = data.first().map_or(7, |&b| (b as usize % 13) + 1);
    let chars: Vec<char> = text.chars().collect();
    for piece in chars.chunks(cut) {
        let _ = f.push(&piece.iter().collect::<String>());
    }
    let _ = f.finish();
    if let Ok(serde_json::Value::Array(v)) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = decache::toolcall::from_openai(&v);
    }
}

const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

fn template() -> &'static ChatTemplate {
    static T: OnceLock<ChatTemplate> = OnceLock::new();
    T.get_or_init(|| ChatTemplate::new(CHATML).expect("chatml"))
}

/// Request bodies of every POST endpoint, parsed into their types and
/// checked as the handlers check them (sampling ranges, messages, tools,
/// tool calls); the chat requests are then rendered through a ChatML
/// template. The first byte picks the endpoint (0 chat, 1 messages, 2
/// completions, 3 tools, 4 responses; its high bit: a Messages request
/// rendered with thinking).
pub fn http_body(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else { return };
    let d = SamplingParams::default();
    let prompt = match (which & 0x7f) % 5 {
        0 => serde_json::from_slice::<request::ChatRequest>(body).ok().and_then(|r| {
            let _ = r.common.sampling.options(&d);
            r.chat_prompt().ok()
        }),
        1 => serde_json::from_slice::<anthropic::MessagesRequest>(body).ok().and_then(|r| {
            let _ = r.sampling().options(&d);
            // The checks, then the context edits with a word count for tokens.
            let mut c = r.check().ok()?;
            let words = |t: &str| t.split_whitespace().count();
            let prompt = |c: &anthropic::content::Conversation| {
                Ok(c.messages(true).iter().map(|m| words(&m.content) + 4).sum::<usize>())
            };
            let count = anthropic::edits::Counter { text: &words, prompt: &prompt };
            let memory = anthropic::edits::Memory::default();
            let edits = c.edits.clone();
            let _ = anthropic::edits::apply(&mut c.conv, &edits, &memory, true, true, &count);
            Some(c.prompt(which & 0x80 != 0))
        }),
        2 => {
            if let Ok(r) = serde_json::from_slice::<request::CompletionRequest>(body) {
                let _ = r.common.sampling.options(&d);
            }
            None
        }
        4 => responses::ResponsesRequest::parse(body).ok().and_then(|r| {
            let _ = r.sampling().options(&d);
            r.chat_prompt(&[]).ok()
        }),
        _ => {
            let _ = serde_json::from_slice::<serde_json::Value>(body)
                .map(|v| v.get("tools").and_then(|t| t.as_array()).map(|t| request::check_tools(t)));
            None
        }
    };
    if let Some(p) = prompt {
        let _ = template().render_with_tools(&p.messages, (!p.tools.is_empty()).then_some(&p.tools[..]), true);
    }
}
