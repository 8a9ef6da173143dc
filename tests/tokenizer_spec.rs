//! Building tokenizers from synthetic metadata: bad metadata gives an error
//! naming the field, never a panic; random vocabularies and random inputs
//! never make encoding or decoding panic.

#[path = "common/gguf_writer.rs"]
mod gguf_writer;
use decache::tokenizer::{Tokenizer, TokenizerError, VocabSpec};
use gguf_writer::Rng;

/// GPT-2's byte alphabet (printable bytes as themselves, the rest from U+0100).
fn byte_chars() -> Vec<String> {
    let printable = |b: u32| (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
    let mut next = 0x100;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap().to_string()
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap().to_string()
            }
        })
        .collect()
}

/// A small valid byte-level BPE vocabulary: 3 control tokens, the 256 byte
/// characters, and a few merges.
fn small_bpe() -> VocabSpec {
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into(), "<|im_end|>".into()];
    tokens.extend(byte_chars());
    let merges: Vec<String> = ["Ġ t", "h e", "Ġt he", "i n", "in g", "Ġ a"].iter().map(|s| s.to_string()).collect();
    for m in &merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut token_types = vec![1; tokens.len()];
    token_types[..3].fill(3);
    VocabSpec {
        model: "gpt2".into(),
        pre: Some("smollm".into()),
        tokens,
        token_types,
        merges,
        bos: Some(1),
        eos: Some(2),
        chat_template: Some("{{ messages }}".into()),
        ..Default::default()
    }
}

fn error_of(spec: VocabSpec) -> String {
    match Tokenizer::from_spec(spec) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn small_vocabulary_encodes_and_decodes() {
    let tok = Tokenizer::from_spec(small_bpe()).unwrap();
    let ids = tok.encode("<|im_start|>a the thing<|im_end|>", false, true).unwrap();
    let the = tok.token_id("Ġthe").unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(*ids.last().unwrap(), 2);
    assert!(ids.contains(&the));
    assert_eq!(tok.decode(&ids, true), "<|im_start|>a the thing<|im_end|>");
    assert_eq!(tok.decode(&ids, false), "a the thing");
    assert!(tok.is_eog(2) && tok.is_eog(0) && !tok.is_eog(1));
    assert_eq!(tok.kind(), "gpt2 BPE (pre: smollm)");
    assert_eq!(tok.chat_template(), Some("{{ messages }}"));
    assert!(tok.encode("", true, true).unwrap().is_empty());
}

#[test]
fn bad_metadata_names_the_field() {
    let mut s = small_bpe();
    s.merges[4] = "inXg".into();
    let e = error_of(s);
    assert!(e.contains("tokenizer.ggml.merges[4]") && e.contains("expected 'a b'"), "{e}");

    let mut s = small_bpe();
    s.token_types.pop();
    assert!(error_of(s).contains("tokenizer.ggml.token_type"));

    let mut s = small_bpe();
    s.scores = vec![0.0; 3];
    assert!(error_of(s).contains("tokenizer.ggml.scores"));

    let mut s = small_bpe();
    s.bos = Some(100_000);
    let e = error_of(s);
    assert!(e.contains("tokenizer.ggml.bos_token_id") && e.contains("100000"), "{e}");

    let mut s = small_bpe();
    s.tokens[7] = s.tokens[8].clone();
    assert!(error_of(s).contains("tokenizer.ggml.tokens[8]"));

    let mut s = small_bpe();
    s.tokens.clear();
    s.token_types.clear();
    assert!(error_of(s).contains("tokenizer.ggml.tokens"));

    let mut s = small_bpe();
    s.merges.clear();
    assert!(error_of(s).contains("tokenizer.ggml.merges"));

    let mut s = small_bpe();
    s.model = "t5".into();
    let e = error_of(s);
    assert!(e.contains("'t5'") && e.contains("gpt2, llama"), "{e}");

    let mut s = small_bpe();
    s.pre = Some("klingon".into());
    let e = Tokenizer::from_spec(s).unwrap_err();
    assert!(
        matches!(&e, TokenizerError::UnsupportedPre { pre, supported } if pre == "klingon" && supported.contains("llama-bpe")),
        "{e}"
    );
}

#[test]
fn random_vocabularies_and_inputs_never_panic() {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    let alphabet: Vec<char> = "ab Ġ<|>▁\n\t'1é中😀\u{0}".chars().collect();
    let rand_text = |rng: &mut Rng, max: usize| -> String {
        (0..rng.below(max)).map(|_| alphabet[rng.below(alphabet.len())]).collect()
    };
    for round in 0..300 {
        let mut s = small_bpe();
        if round % 2 == 1 {
            s.model = "llama".into();
            s.scores = (0..s.tokens.len()).map(|_| -(rng.below(100) as f32)).collect();
        }
        for _ in 0..rng.below(6) {
            match rng.below(8) {
                0 => s.tokens.push(rand_text(&mut rng, 6)),
                1 => s.merges.push(rand_text(&mut rng, 6)),
                2 => {
                    let i = rng.below(s.token_types.len());
                    s.token_types[i] = rng.below(9) as i32 - 1;
                }
                3 => s.eos = Some(rng.below(s.tokens.len() + 2) as u32),
                4 => s.add_bos = Some(rng.below(2) == 0),
                5 => s.add_space_prefix = Some(rng.below(2) == 0),
                6 => s.unk = Some(rng.below(s.tokens.len()) as u32),
                _ => s.pre = Some(["smollm", "llama-bpe", "qwen2", "default", "gpt-2"][rng.below(5)].into()),
            }
        }
        s.token_types.resize(s.tokens.len(), 1);
        if !s.scores.is_empty() {
            s.scores.resize(s.tokens.len(), 0.0);
        }
        let Ok(tok) = Tokenizer::from_spec(s) else {
            continue;
        };
        for _ in 0..20 {
            let text = rand_text(&mut rng, 30);
            let ids = tok.encode(&text, rng.below(2) == 0, rng.below(2) == 0).unwrap();
            assert!(ids.iter().all(|&id| (id as usize) < tok.n_vocab()));
            let _ = tok.decode(&ids, true);
            let garbage: Vec<u32> = (0..rng.below(10)).map(|_| rng.next_u64() as u32 % 400).collect();
            let _ = tok.decode(&garbage, false);
            let mut stream = tok.stream_decoder(true);
            for &id in &garbage {
                let _ = stream.push(id);
            }
            let _ = stream.flush();
        }
    }
}
