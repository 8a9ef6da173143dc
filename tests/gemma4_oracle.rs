//! Gemma 4 (`gemma4`) on random-weight files (tests/common/gemma4_file.rs):
//! logits at every position, after a middle span is decached (keep, and
//! shift: the sliding-window and global layers' keys re-rotated each with
//! their own head size, base and factors), and greedy generations, against
//! llama.cpp on the same file, with plain and with flash attention. The
//! E2B-like shape has everything at once: two head sizes, per-layer kv
//! heads and FFN widths, shared-KV layers owning no cells, V = K where a
//! layer has no `attn_v`, per-layer embeddings, output scales and soft-capped
//! logits; the 26B-A4B-like one adds experts beside the dense FFN.
#[path = "common/arch_check.rs"]
mod arch_check;
#[path = "common/gemma4_file.rs"]
mod gemma4_file;
#[path = "common/gguf_writer.rs"]
mod gguf_writer;
use arch_check::{check, compare, ours};
use decache::session::Gap;
use gemma4_file::{gemma4, Gemma4Shape};
use gguf_writer::Value;

#[test]
fn gemma4_layers_of_two_shapes_match_llama_cpp() {
    for line in check("gemma4", gemma4(&Gemma4Shape::tiny(), 0x4e2b), true) {
        eprintln!("{line}");
    }
    for line in check("gemma4 tied", gemma4(&Gemma4Shape::tiny().tied(), 0x4e2c), true) {
        eprintln!("{line}");
    }
}

#[test]
fn gemma4_experts_beside_the_dense_ffn_match_llama_cpp() {
    for line in check("gemma4 experts", gemma4(&Gemma4Shape::tiny_moe(), 0x4a4b), true) {
        eprintln!("{line}");
    }
    // Gate and up as two tensors instead of one.
    let s = Gemma4Shape { fused_gate_up_exps: false, ..Gemma4Shape::tiny_moe() };
    for line in check("gemma4 experts, gate and up apart", gemma4(&s, 0x4a4c), false) {
        eprintln!("{line}");
    }
}

/// The cache's own operations on rows of several widths, and on layers
/// that own none: a defrag after a removal, and a snapshot restored into a
/// fresh session, give the logits of the session they came from.
#[test]
fn gemma4_defrag_and_snapshots_keep_the_logits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g4.gguf");
    gemma4(&Gemma4Shape::tiny(), 0x4e2d).write(&path);
    let toks: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % 300).collect();
    let more: Vec<u32> = (0..12).map(|i| (i * 53 + 7) % 300).collect();
    for flash in [false, true] {
        let mut plain = ours(&path, flash);
        plain.eval(&toks, false).unwrap();
        plain.remove_range(10, 20, Gap::Keep).unwrap();
        let mut packed = ours(&path, flash);
        packed.eval(&toks, false).unwrap();
        packed.remove_range(10, 20, Gap::Keep).unwrap();
        assert!(packed.defrag().unwrap() > 0, "the removal left a hole to pack");
        let snap = packed.snapshot().unwrap();
        assert!(snap.layout.widths.contains(&(0, 0)), "shared-KV layers own no cells");
        let mut restored = ours(&path, flash);
        restored.restore(&snap).unwrap();

        let want = plain.eval(&more, true).unwrap();
        let rows: Vec<Vec<f32>> = want.chunks(want.len() / more.len()).map(<[f32]>::to_vec).collect();
        let d = compare("after defrag", &packed.eval(&more, true).unwrap(), &rows);
        assert!(d < 1e-2, "defrag moved the logits by {d}");
        let r = compare("restored", &restored.eval(&more, true).unwrap(), &rows);
        assert!(r < 1e-2, "a restored snapshot moved the logits by {r}");
        eprintln!("gemma4 -fa {flash}: defrag max |Δlogit| {d:.1e}, restored snapshot {r:.1e}");
    }
}

/// Layer shapes that cannot work are refused with the key named.
#[test]
fn bad_gemma4_layer_keys_are_refused_by_name() {
    use decache::model::{LoadOptions, Model};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    let load = |g: &gguf_writer::Gguf| {
        g.write(&path);
        Model::load(&path, &LoadOptions::default()).err().expect("refused").to_string()
    };
    let mut g = gemma4(&Gemma4Shape::tiny(), 5);
    g.remove("gemma4.attention.key_length_swa");
    let e = load(&g);
    assert!(e.contains("key_length_swa") && e.contains("missing"), "{e}");
    // Five of six layers shared: fewer than two keep a cache.
    let mut g = gemma4(&Gemma4Shape::tiny(), 5);
    g.set("gemma4.attention.shared_kv_layers", Value::U32(5));
    let e = load(&g);
    assert!(e.contains("shared_kv_layers"), "{e}");
    let mut g = gemma4(&Gemma4Shape::tiny(), 5);
    g.set("gemma4.rope.dimension_count_swa", Value::U32(33));
    let e = load(&g);
    assert!(e.contains("rope.dimension_count_swa"), "{e}");
    // A quantized cache needs one head size.
    let g = gemma4(&Gemma4Shape::tiny(), 5);
    g.write(&path);
    let model = std::sync::Arc::new(Model::load(&path, &LoadOptions::default()).unwrap());
    let cfg = decache::session::SessionConfig {
        n_ctx: 256,
        type_k: decache::ggml::GgmlType::Q8_0,
        flash_attn: true,
        ..Default::default()
    };
    let e = decache::session::Session::new(model, cfg).err().expect("refused").to_string();
    assert!(e.contains("one head size"), "{e}");
}

/// `decache info` names the layer shapes.
#[test]
fn info_names_the_layer_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.gguf");
    gemma4(&Gemma4Shape::tiny(), 1).write(&path);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_decache")).arg("info").arg(&path).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("architecture:    gemma4"), "{out}");
    assert!(out.contains("sliding window:  8 tokens on 4 of 6 layers (SSGSSG)"), "{out}");
    assert!(
        out.contains("heads of 32 (2 kv) on sliding-window layers, 64 (1 kv) on global ones; rotary dims 32 / 64"),
        "{out}"
    );
    assert!(out.contains("feed-forward:    per layer 256, 256, 256, 512, 512, 512"), "{out}");
    assert!(out.contains("shared KV:       layers 3-5 read the cache of layers 1, 1, 2"), "{out}");
    assert!(out.contains("per-layer input: 16 per layer"), "{out}");
}

/// A `gemma4` vocabulary of 300 tokens (the size the test files' embeddings
/// have): control tokens, the 256 byte tokens `<0xXX>`, characters with `▁`
/// for the space, newline runs, and merged tokens with their merges.
fn gemma4_vocab(g: &mut gguf_writer::Gguf) {
    let mut tokens: Vec<String> = ["<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>"].map(String::from).to_vec();
    let mut types = vec![3i32; tokens.len()];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let chars =
        ["▁", "e", "t", "h", "a", "o", "n", "s", "r", "i", "l", "d", "c", "w", ".", ",", "é", "!", "\n", "\n\n\n"];
    let merges = [
        "▁ t", "h e", "▁t he", "i n", "a n", "▁ a", "e r", "o n", "▁ s", "r e", "l l", "▁ w", "▁ c", "a t", "\n \n",
        "▁c at", "▁ é", "o w",
    ];
    for t in chars.iter().map(|c| c.to_string()).chain(merges.iter().map(|m| m.replace(' ', ""))) {
        tokens.push(t);
        types.push(1);
    }
    assert_eq!(tokens.len(), 300);
    g.set("tokenizer.ggml.model", Value::str("gemma4"))
        .set("tokenizer.ggml.pre", Value::str("gemma4"))
        .set("tokenizer.ggml.tokens", Value::strs(&tokens))
        .set("tokenizer.ggml.token_type", Value::i32s(&types))
        .set("tokenizer.ggml.merges", Value::strs(&merges))
        .set("tokenizer.ggml.bos_token_id", Value::U32(2))
        .set("tokenizer.ggml.eos_token_id", Value::U32(1))
        .set("tokenizer.ggml.add_bos_token", Value::Bool(false));
}

/// Gemma 4's tokenizer (`tokenizer.ggml.model = gemma4`) gives llama.cpp's
/// tokens: spaces as `▁`, merges over whole newline-free runs, newline runs
/// that are tokens kept whole, unknown characters as their bytes, BOS always
/// added (llama.cpp overrides the file's false), control tokens parsed; and
/// every token's piece is llama.cpp's.
#[test]
fn gemma4_tokenizer_matches_llama_cpp() {
    use decache::ggml::oracle::OracleModel;
    use decache::model::{LoadOptions, Model};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tok.gguf");
    let mut g = gemma4(&Gemma4Shape::tiny(), 9);
    gemma4_vocab(&mut g);
    g.write(&path);
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let tok = &model.tokenizer;
    let oracle = OracleModel::load(&path).unwrap();
    let texts = [
        "the cat sat on the wall",
        " leading space and  two spaces ",
        "new\nline\n\n\nthree\n\n\n\n\nfive\n\nend\n",
        "naïve café, é!",
        "Thé 日本 🙂 tab\there",
        "<|turn>user\nhi there<turn|>\n",
        "",
        "\n",
        "wow, the ceil",
    ];
    for text in texts {
        for (add, parse) in [(true, true), (false, false)] {
            let mine = tok.encode(text, add, parse).unwrap();
            let theirs: Vec<u32> = oracle.tokenize(text, add, parse).into_iter().map(|t| t as u32).collect();
            assert_eq!(mine, theirs, "{text:?} (add_special {add}, parse_special {parse})");
        }
    }
    for id in 0..300u32 {
        for special in [false, true] {
            assert_eq!(tok.token_to_piece(id, special), oracle.token_to_piece(id as i32, special), "token {id}");
        }
    }
    // What the cases above went through: byte fallback, a newline run kept whole, BOS.
    let bytes: Vec<u32> = "日".bytes().map(|b| 6 + b as u32).collect();
    assert_eq!(tok.encode("日", false, false).unwrap(), bytes);
    assert_eq!(tok.encode("\n\n\n", false, false).unwrap(), [tok.token_id("\n\n\n").unwrap()]);
    assert_eq!(tok.encode("the", true, false).unwrap(), [2, tok.token_id("t").unwrap(), tok.token_id("he").unwrap()]);
    assert_eq!(tok.encode(" the", false, false).unwrap(), [tok.token_id("▁the").unwrap()]);
    assert_eq!(
        tok.decode(&tok.encode("naïve café, the\n\n\n wall", false, false).unwrap(), false),
        "naïve café, the\n\n\n wall"
    );
}
