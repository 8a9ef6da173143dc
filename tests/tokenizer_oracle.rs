//! The tokenizer against llama.cpp (the oracle, same build): token ids for a
//! corpus of varied texts and for every Unicode code point, `token_to_piece`
//! for every id, on the real SmolLM2 vocabulary (gpt2 BPE, pre `smollm`),
//! on the same vocabulary under other pre-tokenizers (tiny models written by
//! the test), and on gemma-3's SentencePiece vocabulary when its file is in
//! the cache.

mod common;
use common::gguf_writer;

use std::path::{Path, PathBuf};

use decache::ggml::oracle::OracleModel;
use decache::gguf::GgufFile;
use decache::tokenizer::{Tokenizer, VocabSpec};
use gguf_writer::{tiny, tiny_llama, Rng, Value};

fn spec_of(path: &Path) -> VocabSpec {
    let f = GgufFile::open(path, false).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    VocabSpec::from_gguf(&f).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn load(path: &Path) -> (Tokenizer, OracleModel) {
    let tok = Tokenizer::from_spec(spec_of(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let oracle = OracleModel::load(path).unwrap_or_else(|e| panic!("{e}"));
    (tok, oracle)
}

const CODE_PY: &str = "def fibonacci(n: int) -> int:\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n        return n\n    a, b = 0, 1\n    for _ in range(n - 1):\n        a, b = b, a + b\n    return b\n\n\nif __name__ == \"__main__\":\n    print([fibonacci(i) for i in range(10)])  # [0, 1, 1, 2, ...]\n";
const CODE_C: &str = "#include <stdio.h>\nint main(int argc, char **argv) {\n\tfor (int i = 0; i < argc; ++i) {\n\t\tprintf(\"%d: %s\\n\", i, argv[i]);\n\t}\n\treturn 0;\n}\n";
const CODE_RS: &str = "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * x).collect();\n    println!(\"{:?}\", v);\n    if let Some(&last) = v.last() { assert_eq!(last, 81); }\n}\n";
const CODE_JS: &str = "const add = (a, b) => a + b;\nexport default async function handler(req, res) {\n  const { data } = await fetch(`https://api.example.com/v1/items?id=${req.query.id}`).then(r => r.json());\n  res.status(200).json({ ok: true, data });\n}\n";
const CODE_GO: &str = "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tm := map[string]int{\"a\": 1}\n\tfor k, v := range m {\n\t\tfmt.Printf(\"%s=%d\\n\", k, v)\n\t}\n}";
const CODE_SQL: &str = "SELECT u.id, u.name, COUNT(o.id) AS orders\nFROM users u LEFT JOIN orders o ON o.user_id = u.id\nWHERE u.created_at >= '2024-01-01'\nGROUP BY u.id HAVING COUNT(o.id) > 5 ORDER BY orders DESC;";
const CODE_HTML: &str =
    "<html>\n  <body>\n    <div class=\"main\" id='x'>&nbsp;&lt;tag&gt; &amp; stuff</div>\n  </body>\n</html>";
const PROSE: &str = "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything before us, we had nothing before us, we were all going direct to Heaven, we were all going direct the other way -- in short, the period was so far like the present period, that some of its noisiest authorities insisted on its being received, for good or for evil, in the superlative degree of comparison only.\n\nThere were a king with a large jaw and a queen with a plain face, on the throne of England; there were a king with a large jaw and a queen with a fair face, on the throne of France. In both countries it was clearer than crystal to the lords of the State preserves of loaves and fishes, that things in general were settled for ever.\n";

/// Varied texts: prose, code, scripts, emoji, whitespace, numbers,
/// contractions, special-token markup, and random mixes of all of them.
fn corpus() -> Vec<String> {
    let fixed: &[&str] = &[
        "", " ", "  ", "\n", "\n\n\n", "\t", " \t\n", "Hello world", "Hello, world!", " Hello", "  Hello   world  ",
        "The quick brown fox jumps over the lazy dog.",
        "I'm sure you're right, they'll see it's what we've done, I'd say.",
        "DON'T SHOUT, HE'LL HEAR. WE'RE HERE. I'M", "rock 'n' roll ' quoted ' '' '''", "e.g. i.e. U.S.A. Mr. Smith's",
        "1 12 123 1234 12345 123456 1234567 12345678901234567890", "3.14159 2,718 -42 +7 1e10 0x1F 0b1010 1_000_000",
        "Price: $1,299.99 (20% off!) — only €999; £5; ¥100", "trailing spaces   ", "   leading spaces",
        "tabs\tand\t\ttabs", "windows\r\nline\r\nendings\r\n", "mixed \r \n \r\n\r\n  \n\t\n",
        "a\u{a0}b\u{3000}c\u{2003}d\u{200b}e\u{2028}f\u{85}g",
        "<|im_start|>user\nhi<|im_end|>",
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "<|endoftext|><|endoftext|>x<|endoftext|>", "<|im_start|><|im_end|>", "<|im_start", "<|im_start|",
        "text <|im_end|> text", "<reponame>foo<file_sep>bar<filename>baz.py",
        "<jupyter_code>print(1)<jupyter_output>1<empty_output>", "<s></s><unk><pad>[INST][/INST]<<SYS>>",
        "<bos><start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n<eos>",
        "中文测试：你好，世界！这是一个测试。", "日本語のテキスト、カタカナとひらがな。東京は大きい都市です。",
        "한국어 텍스트입니다. 안녕하세요!", "مرحبا بالعالم، هذا نص عربي. ١٢٣٤٥", "नमस्ते दुनिया, यह हिंदी पाठ है। १२३४",
        "Привет, мир! Это русский текст. Ёжик.", "Γειά σου κόσμε! Ελληνικό κείμενο. ΑΒΓ αβγ", "שלום עולם", "สวัสดีชาวโลก",
        "Tiếng Việt có dấu: ắằẳẵặ", "Ünïcödé çàfé naïve résumé Ångström",
        "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇫🇷🇯🇵🇺🇸 ❤️ ✨🔥💯", "🤖🧠 ⚡️ 1️⃣ #️⃣ ©️ ™",
        "math ∀x∈ℝ: x²≥0 ∑∫∂ √2 ≈ 1.414 ½ ¾ ⅓ Ⅻ ⑳", "zalgo t̴̢̛e̷͉̓x̸̢̉t̵̰͝", "ﬁ ﬂ ﬀ ＡＢＣ ａｂｃ １２３ ｶﾀｶﾅ",
        "\u{0}\u{1}\u{7}\u{8}\u{b}\u{c}\u{1f}\u{7f}", "\u{202e} reversed \u{202d}", "\u{feff}BOM", "\u{fffd} replacement",
        "Garay 𐵐𐵑 Todhri 𐗀 Kirat Rai 𖵀 (Unicode 16)", "CJK ext I 𮯰 ext H 𱍐",
        CODE_PY, CODE_C, CODE_RS, CODE_JS, CODE_GO, CODE_SQL, CODE_HTML, PROSE,
    ];
    let mut texts: Vec<String> = fixed.iter().map(|s| s.to_string()).collect();
    texts.push("a".repeat(300));
    texts.push(format!("{}x", " ".repeat(100)));
    texts.push("\n".repeat(50));
    texts.push("😀".repeat(50));
    texts.push("1".repeat(100));
    texts.push(PROSE.repeat(8)); // a long text
    let pieces: Vec<&str> = vec![
        "a",
        "b",
        "c",
        "X",
        "Z",
        "0",
        "1",
        "9",
        " ",
        "\t",
        "\n",
        "\r",
        "'",
        "\"",
        ".",
        ",",
        ";",
        ":",
        "!",
        "?",
        "-",
        "_",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        "<",
        ">",
        "/",
        "\\",
        "|",
        "@",
        "#",
        "$",
        "%",
        "^",
        "&",
        "*",
        "+",
        "=",
        "~",
        "`",
        "é",
        "ü",
        "ß",
        "ñ",
        "中",
        "文",
        "日",
        "本",
        "한",
        "ا",
        "ب",
        "ह",
        "ि",
        "я",
        "Ж",
        "Ω",
        "ω",
        "١",
        "३",
        "😀",
        "👍🏽",
        "\u{200d}",
        "\u{fe0f}",
        "🇫",
        "\u{a0}",
        "\u{3000}",
        "\u{2003}",
        "\u{301}",
        "\u{85}",
        "'s",
        "'t",
        "'re",
        "'LL",
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<start_of_turn>",
        "<eos>",
        "  ",
        "\r\n",
        "123",
        "the",
        " the",
        "ing",
    ];
    // The project's tokenizer corpus: 46 cases separated by "-----" lines
    // (untrimmed: leading and trailing whitespace is part of each case).
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/prompts/tokenizer-corpus.txt");
    let corpus = std::fs::read_to_string(file).expect("prompts/tokenizer-corpus.txt");
    let cases: Vec<String> = corpus.split("\n-----\n").map(str::to_string).collect();
    assert!(cases.len() >= 40, "the tokenizer corpus has only {} cases", cases.len());
    texts.extend(cases);
    let mut rng = Rng::new(0x5eed_1234_abcd_0001);
    for _ in 0..1500 {
        let n = 1 + rng.below(40);
        texts.push((0..n).map(|_| pieces[rng.below(pieces.len())]).collect());
    }
    texts
}

/// Texts that put every Unicode scalar value (the ones in `range`) next to
/// letters, digits, spaces, newlines and apostrophes, 16 code points a text.
fn codepoint_texts(step: usize) -> Vec<String> {
    let chars: Vec<char> = (0..=0x10FFFFu32).filter_map(char::from_u32).collect();
    chars
        .chunks(16)
        .step_by(step)
        .map(|group| group.iter().map(|c| format!("a{c} {c}b{c}{c}9 {c}\n'{c}")).collect())
        .collect()
}

fn as_u32(ids: Vec<i32>) -> Vec<u32> {
    ids.into_iter().map(|i| i as u32).collect()
}

/// Compares `encode` with the oracle for every text and flag combination;
/// panics listing the first mismatches.
fn check_encode(label: &str, tok: &Tokenizer, oracle: &OracleModel, texts: &[String], all_flags: bool) {
    let flags: &[(bool, bool)] =
        if all_flags { &[(false, false), (false, true), (true, false), (true, true)] } else { &[(false, false)] };
    let mut bad = Vec::new();
    for text in texts {
        for &(add_special, parse_special) in flags {
            let want = as_u32(oracle.tokenize(text, add_special, parse_special));
            let got = tok.encode(text, add_special, parse_special).unwrap();
            if got != want {
                bad.push(format!(
                    "{label}: add_special={add_special} parse_special={parse_special} text={text:?}\n  llama.cpp: {want:?}\n  decache:   {got:?}"
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches, first ones:\n{}",
        bad.len(),
        bad.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Compares `token_to_piece` with the oracle for every id, both ways.
fn check_pieces(label: &str, tok: &Tokenizer, oracle: &OracleModel) {
    assert_eq!(tok.n_vocab(), oracle.n_vocab(), "{label}: n_vocab");
    let mut bad = Vec::new();
    for id in 0..tok.n_vocab() as u32 {
        for special in [false, true] {
            let want = oracle.token_to_piece(id as i32, special);
            let got = tok.token_to_piece(id, special);
            if got != want {
                bad.push(format!("{label}: id {id} special={special}: llama.cpp {want:?}, decache {got:?}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "{} mismatches, first ones:\n{}",
        bad.len(),
        bad.iter().take(5).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn smollm2_encode_matches_llama_cpp() {
    let (tok, oracle) = load(&common::smollm2());
    assert_eq!(tok.kind(), "gpt2 BPE (pre: smollm)");
    check_encode("smollm2", &tok, &oracle, &corpus(), true);
}

#[test]
fn smollm2_every_codepoint_matches_llama_cpp() {
    let (tok, oracle) = load(&common::smollm2());
    check_encode("smollm2 code points", &tok, &oracle, &codepoint_texts(1), false);
}

#[test]
fn smollm2_token_to_piece_matches_for_every_id() {
    let (tok, oracle) = load(&common::smollm2());
    check_pieces("smollm2", &tok, &oracle);
}

#[test]
fn smollm2_decode_is_the_pieces_and_round_trips() {
    let (tok, oracle) = load(&common::smollm2());
    for text in corpus() {
        let ids = tok.encode(&text, false, true).unwrap();
        for special in [false, true] {
            let pieces: Vec<u8> = ids.iter().flat_map(|&id| oracle.token_to_piece(id as i32, special)).collect();
            assert_eq!(tok.decode(&ids, special), String::from_utf8_lossy(&pieces), "{text:?}");
            let mut stream = tok.stream_decoder(special);
            let mut streamed: String = ids.iter().map(|&id| stream.push(id)).collect();
            streamed.push_str(&stream.flush());
            assert_eq!(streamed, tok.decode(&ids, special), "{text:?}");
        }
        // With special tokens rendered, any text comes back unchanged.
        assert_eq!(tok.decode(&ids, true), text);
    }
}

#[test]
fn smollm2_special_ids_and_end_of_generation() {
    let (tok, oracle) = load(&common::smollm2());
    assert_eq!(tok.n_vocab(), oracle.n_vocab());
    assert_eq!((tok.bos(), tok.eos(), tok.eot()), (Some(1), Some(2), Some(0)));
    assert!(!tok.add_bos() && !tok.add_eos());
    // <|endoftext|>, <|im_end|>, and <reponame> (a FIM "repo" token).
    assert_eq!(tok.eog_tokens(), [0, 2, 4]);
    assert!(tok.is_eog(2) && !tok.is_eog(1) && !tok.is_eog(100));
    assert!(tok.chat_template().is_some_and(|t| t.contains("<|im_start|>")));
}

/// Writes a tiny llama model carrying `spec`'s vocabulary with `pre` (or none).
fn write_variant(dir: &Path, spec: &VocabSpec, pre: Option<&str>, drop_add_bos: bool) -> PathBuf {
    let mut g = tiny_llama();
    let n_vocab = spec.tokens.len() as u64;
    g.set("tokenizer.ggml.model", Value::str(&spec.model))
        .set("tokenizer.ggml.tokens", Value::strs(&spec.tokens))
        .set("tokenizer.ggml.token_type", Value::i32s(&spec.token_types))
        .set("tokenizer.ggml.merges", Value::strs(&spec.merges))
        .set("tokenizer.ggml.bos_token_id", Value::U32(spec.bos.unwrap()))
        .set("tokenizer.ggml.eos_token_id", Value::U32(spec.eos.unwrap()));
    match pre {
        Some(p) => {
            g.set("tokenizer.ggml.pre", Value::str(p));
        }
        None => {
            g.remove("tokenizer.ggml.pre");
        }
    }
    if drop_add_bos {
        g.remove("tokenizer.ggml.add_bos_token");
    }
    g.remove_tensor("token_embd.weight");
    g.tensor_f32("token_embd.weight", &[tiny::N_EMBD, n_vocab], &mut Rng::new(7));
    let path = dir.join(format!("vocab-{}.gguf", pre.unwrap_or("none")));
    g.write(&path);
    path
}

#[test]
fn other_pre_tokenizers_match_llama_cpp() {
    let spec = spec_of(&common::smollm2());
    let dir = tempfile::tempdir().unwrap();
    let texts = corpus();
    let mut sample = codepoint_texts(23);
    sample.truncate(3000);
    for (pre, drop_add_bos) in [
        (Some("llama-bpe"), true),
        (Some("qwen2"), false),
        (Some("gpt-2"), false),
        (Some("default"), false),
        (None, false),
        (Some("starcoder"), false),
        (Some("stablelm2"), false),
        (Some("dbrx"), false),
        (Some("command-r"), false),
    ] {
        let path = write_variant(dir.path(), &spec, pre, drop_add_bos);
        let (tok, oracle) = load(&path);
        let label = format!("pre {pre:?}");
        if drop_add_bos {
            assert!(tok.add_bos(), "{label}: llama3 vocabularies add BOS by default");
        }
        check_encode(&label, &tok, &oracle, &texts, true);
        check_encode(&label, &tok, &oracle, &sample, false);
    }
}

#[test]
fn gemma3_sentencepiece_matches_llama_cpp() {
    let path = common::gemma3();
    let (tok, oracle) = load(&path);
    assert_eq!(tok.kind(), "llama SentencePiece");
    assert_eq!((tok.bos(), tok.eos(), tok.eot()), (Some(2), Some(1), Some(106)));
    assert!(tok.add_bos());
    check_encode("gemma3", &tok, &oracle, &corpus(), true);
    let mut sample = codepoint_texts(11);
    sample.truncate(6000);
    check_encode("gemma3 code points", &tok, &oracle, &sample, false);
    check_pieces("gemma3", &tok, &oracle);
}
