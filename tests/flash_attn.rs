//! Flash attention (`-fa on`) against plain attention and against
//! llama.cpp's flash attention, with decached cells in the cache: removed
//! spans, defragmented cells, a snapshot moved between the two layouts of V,
//! and a quantized V cache (which only flash attention can hold).
mod common;
use common::*;
use decache::ggml::oracle::{OracleContext, OracleModel, OracleParams};
use decache::ggml::GgmlType;
use decache::model::{LoadOptions, Model};
use decache::session::{Gap, Session, SessionConfig};
use std::sync::Arc;

/// Position spans removed from the conversation (latest first).
fn spans(n: i32) -> Vec<(i32, i32)> {
    let at = |f: f32| (f * n as f32) as i32;
    vec![(at(0.7), at(0.8)), (at(0.35), at(0.5)), (at(0.12), at(0.2))]
}

fn session(model: &Arc<Model>, flash_attn: bool, type_v: GgmlType, ggml_attention: bool) -> Session {
    let cfg =
        SessionConfig { n_ctx: 512, n_threads: 2, flash_attn, type_v, ggml_attention, ..SessionConfig::default() };
    Session::new(model.clone(), cfg).unwrap()
}

/// Prefill, remove the spans (keep positions), and return the session
/// (with flash attention, decoding through decache's kernel).
fn decached(model: &Arc<Model>, abc: &[u32], flash_attn: bool, type_v: GgmlType) -> Session {
    decached_with(model, abc, flash_attn, type_v, false)
}

fn decached_with(model: &Arc<Model>, abc: &[u32], flash_attn: bool, type_v: GgmlType, ggml: bool) -> Session {
    let mut s = session(model, flash_attn, type_v, ggml);
    s.eval(abc, false).unwrap();
    for (p0, p1) in spans(abc.len() as i32) {
        s.remove_range(p0, p1, Gap::Keep).unwrap();
    }
    s
}

/// Top-1 identical at every row; the largest |Δlogit|.
fn compare(what: &str, a: &[f32], b: &[f32], n_vocab: usize) -> f32 {
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for (i, (x, y)) in a.chunks(n_vocab).zip(b.chunks(n_vocab)).enumerate() {
        assert_eq!(argmax(x), argmax(y), "{what}: top-1 differs at row {i}");
        worst = worst.max(max_abs_diff(x, y));
    }
    eprintln!("{what}: {} rows, max |Δlogit| = {worst:.3e}", a.len() / n_vocab);
    worst
}

fn tokens(oracle: &OracleModel, text: &str) -> Vec<u32> {
    oracle.tokenize(text, false, true).into_iter().map(|t| t as u32).collect()
}

/// llama.cpp's logits of `d` after prefilling `abc` and `seq_rm` of the spans.
fn llama_after_removal(oracle: &OracleModel, abc: &[u32], d: &[u32], flash_attn: bool, type_v: GgmlType) -> Vec<f32> {
    let n = abc.len() as i32;
    let p = OracleParams { n_ctx: 512, n_threads: 2, flash_attn, type_v, ..OracleParams::default() };
    let mut oc = OracleContext::new(oracle, &p).unwrap();
    let abc_i: Vec<i32> = abc.iter().map(|&t| t as i32).collect();
    oc.decode(&abc_i, &(0..n).collect::<Vec<_>>(), false).unwrap();
    for (p0, p1) in spans(n) {
        assert!(oc.seq_rm(p0, p1));
    }
    let d_i: Vec<i32> = d.iter().map(|&t| t as i32).collect();
    oc.decode(&d_i, &(n..n + d.len() as i32).collect::<Vec<_>>(), true).unwrap().concat()
}

/// SmolLM2 for us and for llama.cpp, and the conversation's tokens.
struct Setup {
    model: Arc<Model>,
    oracle: OracleModel,
    abc: Vec<u32>,
    d: Vec<u32>,
    n_vocab: usize,
}

fn setup() -> Setup {
    let path = smollm2();
    let model = Arc::new(Model::load(&path, &LoadOptions::default()).unwrap());
    let oracle = OracleModel::load(&path).unwrap();
    let (abc, d) = (tokens(&oracle, CONVERSATION), tokens(&oracle, FOLLOW_UP));
    let n_vocab = model.hparams.n_vocab as usize;
    Setup { model, oracle, abc, d, n_vocab }
}

#[test]
fn flash_and_plain_attention_agree_with_decached_cells() {
    let Setup { model, oracle, abc, d, n_vocab } = setup();

    let mut plain = decached(&model, &abc, false, GgmlType::F16);
    let mut flash = decached(&model, &abc, true, GgmlType::F16);
    let want = plain.eval(&d, true).unwrap();
    let got = flash.eval(&d, true).unwrap();
    // The flash session decodes D through decache's kernel (f32 sums) over
    // cells prefilled with ggml's fused op (which accumulates V in f16):
    // close to plain, not equal. The gap is bounded by llama.cpp's own
    // between its two paths.
    let gap = compare("flash vs plain, 3 spans removed", &got, &want, n_vocab);
    let theirs = |flash_attn| llama_after_removal(&oracle, &abc, &d, flash_attn, GgmlType::F16);
    let their_gap = compare("llama.cpp: flash vs plain, the same removal", &theirs(true), &theirs(false), n_vocab);
    assert!(gap <= their_gap * 1.05 + 1e-3, "ours {gap}, llama.cpp's {their_gap}");
    // The bound is llama.cpp's gap on the same machine (above); its size
    // depends on the CPU's f16 kernels: 1.53 on an Intel AVX-512/AMX host,
    // 2.24 on an AMD Zen 4 one. This ceiling only catches both paths
    // drifting apart together.
    assert!(gap < 4.0, "{gap}");

    // Defrag moves V rows: the live cells' order changes, and with it the
    // order of the f16 accumulation, so the logits move within the same gap.
    let mut flash2 = decached(&model, &abc, true, GgmlType::F16);
    assert!(flash2.defrag().unwrap() > 0, "nothing moved");
    let got2 = flash2.eval(&d, true).unwrap();
    assert!(compare("flash after defrag vs flash", &got2, &got, n_vocab) <= their_gap * 1.05 + 1e-3);
    // With an f32 V cache the accumulation is f32, yet defrag still moves the
    // logits on some CPUs: under 1e-3 on an Intel AVX-512/AMX host, 0.78 on an AMD
    // Zen 4 one, where plain attention moves by as much (0.78) and plain
    // f16 V against plain f32 V differs by 1.9. The reordered sums differ in
    // the last bits, and (likely) 30 layers of 8-bit quantized activations amplify
    // that. The bound is the same as above: llama.cpp's own gap, top-1 equal.
    let f32_logits = |defrag: bool| {
        let mut s = decached(&model, &abc, true, GgmlType::F32);
        if defrag {
            s.defrag().unwrap();
        }
        s.eval(&d, true).unwrap()
    };
    assert!(
        compare("flash, f32 V: after defrag vs before", &f32_logits(true), &f32_logits(false), n_vocab)
            <= their_gap * 1.05 + 1e-3
    );

    // A snapshot is element-major whatever the layout: flash -> flash, and
    // flash -> plain -> flash, give back the same bits.
    let snap = decached(&model, &abc, true, GgmlType::F16).snapshot().unwrap();
    let mut again = session(&model, true, GgmlType::F16, false);
    again.restore(&snap).unwrap();
    assert_eq!(
        compare("flash restored from a flash snapshot vs flash", &again.eval(&d, true).unwrap(), &got, n_vocab),
        0.0
    );
    let mut via_plain = session(&model, false, GgmlType::F16, false);
    via_plain.restore(&snap).unwrap();
    let mut back = session(&model, true, GgmlType::F16, false);
    back.restore(&via_plain.snapshot().unwrap()).unwrap();
    assert_eq!(
        compare("flash restored through a plain session vs flash", &back.eval(&d, true).unwrap(), &got, n_vocab),
        0.0
    );

    // A q8_0 V cache needs flash attention.
    let q = SessionConfig { n_ctx: 512, n_threads: 2, type_v: GgmlType::Q8_0, ..SessionConfig::default() };
    let err = Session::new(model.clone(), q).err().expect("a quantized V cache without flash attention").to_string();
    assert!(err.contains("flash attention"), "{err}");
}

#[test]
fn flash_attention_matches_llama_cpp_flash_attention_after_removal() {
    let Setup { model, oracle, abc, d, n_vocab } = setup();

    // With ggml's fused op at every step, as llama.cpp attends.
    for type_v in [GgmlType::F16, GgmlType::Q8_0] {
        let ours = decached_with(&model, &abc, true, type_v, true).eval(&d, true).unwrap();
        let theirs = llama_after_removal(&oracle, &abc, &d, true, type_v);
        let worst =
            compare(&format!("flash vs llama.cpp flash, {type_v} V, 3 spans removed (keep)"), &ours, &theirs, n_vocab);
        assert!(worst < 0.05, "max |Δlogit| {worst}");
    }
}

/// Token by token (every step a decoding step, through decache's kernel),
/// against llama.cpp's plain attention over the same f16 cache (its sums in
/// f32, its probabilities rounded to f16), beside llama.cpp's fused op (its
/// V sums in f16): decache's kernel is the closer, at the worst row and on
/// average. (SmolLM2 amplifies any rounding in attention to over a logit;
/// tests/decode_attention.rs measures the kernels against an exact one.)
#[test]
fn the_decode_kernel_is_closer_than_ggml_to_plain_attention() {
    let Setup { model, oracle, abc, d, .. } = setup();
    let toks: Vec<u32> = abc.iter().chain(&d).copied().collect();
    let mut s = session(&model, true, GgmlType::F16, false);
    let mut ours = Vec::new();
    for &t in &toks {
        ours.extend(s.eval(&[t], true).unwrap());
    }
    let llama = |flash_attn: bool, typ: GgmlType| {
        let p =
            OracleParams { n_ctx: 512, n_threads: 2, flash_attn, type_k: typ, type_v: typ, ..OracleParams::default() };
        let mut oc = OracleContext::new(&oracle, &p).unwrap();
        let mut rows = Vec::new();
        for (i, &t) in toks.iter().enumerate() {
            rows.extend(oc.decode(&[t as i32], &[i as i32], true).unwrap().concat());
        }
        rows
    };
    let reference = llama(false, GgmlType::F16);
    let ggml = llama(true, GgmlType::F16);
    let off = |x: &[f32]| {
        let d: Vec<f32> = x.iter().zip(&reference).map(|(a, b)| (a - b).abs()).collect();
        (d.iter().fold(0f32, |m, &v| m.max(v)), d.iter().sum::<f32>() / d.len() as f32)
    };
    let ((ours_max, ours_mean), (ggml_max, ggml_mean)) = (off(&ours), off(&ggml));
    eprintln!(
        "{} steps against plain attention: decache's kernel max |Δlogit| {ours_max:.3} (mean {ours_mean:.4}), \
         ggml's fused op {ggml_max:.3} (mean {ggml_mean:.4})",
        toks.len()
    );
    assert!(ours_max < ggml_max && ours_mean < ggml_mean, "ours {ours_max}/{ours_mean}, ggml's {ggml_max}/{ggml_mean}");
}
