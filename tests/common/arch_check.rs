//! The parity check every architecture's random-weight file goes through:
//! logits at every position of a prompt against llama.cpp's on the same
//! file, then a middle span removed (keep, and shift when asked) and the
//! continuation compared with `llama_memory_seq_rm` (+ `seq_add`), then
//! greedy generations from two more prompts, with plain and with flash
//! attention.
#![allow(dead_code)]
use super::gguf_writer::Gguf;
use decache::ggml::oracle::{OracleContext, OracleModel, OracleParams};
use decache::model::{LoadOptions, Model};
use decache::session::{PositionPolicy, Session, SessionConfig};
use std::path::Path;
use std::sync::Arc;

pub const N_CTX: usize = 256;

/// decache on `path`; with flash attention through ggml's fused op at every
/// step, as llama.cpp computes it (`decode_kernel` has decode steps take
/// decache's own kernel instead).
pub fn ours(path: &Path, flash_attn: bool) -> Session {
    ours_with(path, flash_attn, false)
}

pub fn ours_with(path: &Path, flash_attn: bool, decode_kernel: bool) -> Session {
    let model =
        Arc::new(Model::load(path, &LoadOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display())));
    let cfg = SessionConfig {
        n_ctx: N_CTX,
        n_threads: 2,
        flash_attn,
        ggml_attention: !decode_kernel,
        ..SessionConfig::default()
    };
    Session::new(model, cfg).unwrap()
}

/// The largest |Δlogit| between rows (no top-1 check: at the near-ties of
/// random weights, two kernels' rounding may swap them).
pub fn max_diff(mine: &[f32], theirs: &[Vec<f32>]) -> f32 {
    let n = theirs[0].len();
    assert_eq!(mine.len(), n * theirs.len(), "row count");
    theirs
        .iter()
        .enumerate()
        .flat_map(|(i, row)| mine[i * n..(i + 1) * n].iter().zip(row))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |b, (j, &x)| if x > v[b] { j } else { b })
}

/// Compare rows; returns the largest |Δlogit|, asserting top-1 agreement.
pub fn compare(what: &str, mine: &[f32], theirs: &[Vec<f32>]) -> f32 {
    let n = theirs[0].len();
    assert_eq!(mine.len(), n * theirs.len(), "{what}: row count");
    let mut worst = 0f32;
    for (i, row) in theirs.iter().enumerate() {
        let m = &mine[i * n..(i + 1) * n];
        assert_eq!(argmax(m), argmax(row), "{what}: top-1 differs at row {i}");
        worst = worst.max(m.iter().zip(row).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max));
    }
    worst
}

/// Full-sequence logits, then a removal of [10, 20) and 12 more tokens,
/// with `keep` (gap) and, when `shift`, with the gap closed (`seq_add`),
/// each against llama.cpp, with plain and with flash attention.
pub fn check(arch: &str, g: Gguf, shift: bool) -> Vec<String> {
    let mut report = check_attn(arch, &g, shift, false);
    report.extend(check_attn(&format!("{arch} -fa"), &g, shift, true));
    report
}

pub fn check_attn(arch: &str, g: &Gguf, shift: bool, flash_attn: bool) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{}.gguf", arch.replace(' ', "_")));
    g.write(&path);
    let toks: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % 300).collect();
    let more: Vec<u32> = (0..12).map(|i| (i * 53 + 7) % 300).collect();
    let ids = |t: &[u32]| t.iter().map(|&x| x as i32).collect::<Vec<_>>();
    let oracle = OracleModel::load(&path).unwrap_or_else(|e| panic!("{arch}: {e}"));
    let params = OracleParams { n_ctx: N_CTX as u32, n_threads: 2, flash_attn, ..OracleParams::default() };
    let mut report = Vec::new();
    for policy in [PositionPolicy::Keep, PositionPolicy::Shift] {
        let mut s = ours(&path, flash_attn);
        let mine = s.eval(&toks, true).unwrap();
        let mut oc = OracleContext::new(&oracle, &params).unwrap();
        let theirs = oc.decode(&ids(&toks), &(0..40).collect::<Vec<i32>>(), true).unwrap();
        let full = compare(&format!("{arch} prefill"), &mine, &theirs);
        if policy == PositionPolicy::Shift && !shift {
            continue;
        }
        s.remove_range(10, 20, policy.gap()).unwrap();
        assert!(oc.seq_rm(10, 20), "{arch}: llama.cpp refused seq_rm");
        let start = if policy == PositionPolicy::Shift {
            oc.seq_add(20, 40, -10);
            30
        } else {
            40
        };
        let mine = s.eval(&more, true).unwrap();
        let theirs = oc.decode(&ids(&more), &(start..start + 12).collect::<Vec<i32>>(), true).unwrap();
        let after = compare(&format!("{arch} after removal ({policy:?})"), &mine, &theirs);
        assert!(
            full < 2e-3 && after < 2e-3,
            "{arch}: max |Δlogit| {full} before, {after} after the removal ({policy:?})"
        );
        report.push(format!("{arch} {policy:?}: max |Δlogit| {full:.1e} prefill, {after:.1e} after removal"));
    }
    report.push(greedy(arch, &path, &oracle, &params, flash_attn));
    if flash_attn {
        // decache's decoding kernel (steps of fewer than 64 rows) against
        // llama.cpp's plain attention, which sums in f32 as the kernel does
        // (llama.cpp's fused op sums V in f16: tests/decode_attention.rs).
        let mut s = ours_with(&path, true, true);
        let plain = OracleParams { flash_attn: false, ..params.clone() };
        let mut oc = OracleContext::new(&oracle, &plain).unwrap();
        let mine = s.eval(&toks, true).unwrap();
        let full = max_diff(&mine, &oc.decode(&ids(&toks), &(0..40).collect::<Vec<i32>>(), true).unwrap());
        s.remove_range(10, 20, PositionPolicy::Keep.gap()).unwrap();
        assert!(oc.seq_rm(10, 20));
        let mine = s.eval(&more, true).unwrap();
        let after = max_diff(&mine, &oc.decode(&ids(&more), &(40..52).collect::<Vec<i32>>(), true).unwrap());
        assert!(
            full < 0.05 && after < 0.05,
            "{arch} decode kernel: max |Δlogit| {full} before, {after} after the removal"
        );
        report.push(format!(
            "{arch} decode kernel against plain attention: max |Δlogit| {full:.1e} prefill, {after:.1e} after removal"
        ));
    }
    report
}

/// Greedy generations of 16 tokens from two more prompts, ours and
/// llama.cpp's, token for token.
pub fn greedy(arch: &str, path: &Path, oracle: &OracleModel, params: &OracleParams, flash_attn: bool) -> String {
    let mut out = Vec::new();
    for (seed, len) in [(5u32, 7usize), (91, 23)] {
        let prompt: Vec<u32> = (0..len as u32).map(|i| (i * seed + 3) % 300).collect();
        let mut s = ours(path, flash_attn);
        let mut oc = OracleContext::new(oracle, params).unwrap();
        let mut mine = argmax(&s.eval(&prompt, false).unwrap());
        let ids: Vec<i32> = prompt.iter().map(|&t| t as i32).collect();
        let rows = oc.decode(&ids, &(0..len as i32).collect::<Vec<_>>(), false).unwrap();
        let mut theirs = argmax(rows.last().unwrap());
        let (mut a, mut b) = (vec![mine], vec![theirs]);
        for i in 0..15 {
            mine = argmax(&s.eval(&[mine as u32], false).unwrap());
            let rows = oc.decode(&[theirs as i32], &[(len + i) as i32], false).unwrap();
            theirs = argmax(rows.last().unwrap());
            a.push(mine);
            b.push(theirs);
        }
        assert_eq!(a, b, "{arch}: greedy generations differ from prompt {seed}/{len}");
        out.push(format!("{a:?}"));
    }
    format!("{arch}: greedy generations identical: {}", out.join(" and "))
}

/// After removing [10, 20) and closing the gap, the next tokens' logits
/// against llama.cpp prefilling the kept tokens afresh at the closed
/// positions. In a one-layer model the cached keys depend on nothing but
/// their token and position, so a shift that rotated them right differs
/// from the recompute only by rounding; one that scaled them again (as
/// llama.cpp's own K-shift does with YaRN) differs by far more.
pub fn shift_against_recompute(arch: &str, g: &Gguf) -> String {
    shift_against(arch, g, Recompute::LlamaCpp)
}

/// Who recomputes the kept tokens for `shift_against`.
pub enum Recompute {
    LlamaCpp,
    /// decache itself, in a fresh session (for files llama.cpp cannot run,
    /// where decache's prefill is checked against llama.cpp elsewhere).
    Decache,
}

pub fn shift_against(arch: &str, g: &Gguf, by: Recompute) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shift.gguf");
    g.write(&path);
    let toks: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % 300).collect();
    let more: Vec<u32> = (0..12).map(|i| (i * 53 + 7) % 300).collect();
    let mut s = ours(&path, true);
    s.eval(&toks, false).unwrap();
    s.remove_range(10, 20, PositionPolicy::Shift.gap()).unwrap();
    let mine = s.eval(&more, true).unwrap();
    let kept: Vec<u32> = toks[..10].iter().chain(&toks[20..]).chain(&more).copied().collect();
    let rows: Vec<Vec<f32>> = match by {
        Recompute::LlamaCpp => {
            let oracle = OracleModel::load(&path).unwrap();
            let params =
                OracleParams { n_ctx: N_CTX as u32, n_threads: 2, flash_attn: true, ..OracleParams::default() };
            let mut oc = OracleContext::new(&oracle, &params).unwrap();
            let ids: Vec<i32> = kept.iter().map(|&t| t as i32).collect();
            oc.decode(&ids, &(0..kept.len() as i32).collect::<Vec<_>>(), true).unwrap()
        }
        Recompute::Decache => {
            let all = ours(&path, true).eval(&kept, true).unwrap();
            let n = all.len() / kept.len();
            all.chunks(n).map(<[f32]>::to_vec).collect()
        }
    };
    let d = compare(&format!("{arch} shift against recompute"), &mine, &rows[30..]);
    assert!(d < 0.05, "{arch}: shift against a recompute: max |Δlogit| {d}");
    format!("{arch} Shift: max |Δlogit| {d:.1e} against a recompute of the kept tokens")
}
