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
        assert!(snap.layout.widths.iter().any(|&w| w == (0, 0)), "shared-KV layers own no cells");
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
