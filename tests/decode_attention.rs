//! decache's decoding attention (`Context::decode_attention`) against an
//! exact reference in f64 and against ggml-cpu's fused attention, on
//! random heads and caches (no model needed).
use decache::ggml::{decode_attention_fits, Backend, Context, GgmlType, KernelArgs, Scheduler};

/// A reproducible stream of values that f16 holds exactly (multiples of
/// 1/64 in [-2, 2)), so the reference sees what the kernels see.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % 256) as f32 / 64.0 - 2.0
    }
}

#[derive(Clone, Copy)]
struct Shape {
    d: i64,
    n_head: i64,
    n_head_kv: i64,
    n_kv: i64,
    rows: i64,
}

struct Case {
    s: Shape,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Row-major [rows][n_kv]: 0 visible, -inf hidden.
    mask: Vec<f32>,
    sinks: Option<Vec<f32>>,
    scale: f32,
}

impl Case {
    fn new(s: Shape, seed: u64, hidden_every: usize, sinks: bool) -> Case {
        let mut r = Rng(seed);
        let mut take = |n: i64| (0..n).map(|_| r.next()).collect::<Vec<_>>();
        let q = take(s.d * s.n_head * s.rows);
        let k = take(s.d * s.n_head_kv * s.n_kv);
        let v = take(s.d * s.n_head_kv * s.n_kv);
        let sinks = sinks.then(|| take(s.n_head));
        // Row r sees the cells up to n_kv - rows + r (causal), less every
        // `hidden_every`-th one.
        let mut mask = vec![f32::NEG_INFINITY; (s.rows * s.n_kv) as usize];
        for row in 0..s.rows {
            for c in 0..=(s.n_kv - s.rows + row) {
                if hidden_every == 0 || !(c as usize + row as usize).is_multiple_of(hidden_every) {
                    mask[(row * s.n_kv + c) as usize] = 0.0;
                }
            }
        }
        Case { s, q, k, v, mask, sinks, scale: 1.0 / (s.d as f32).sqrt() }
    }

    /// Row `row` of this batch alone, over its first `n_kv` cells.
    fn alone(&self, row: usize, n_kv: i64) -> Case {
        let s = self.s;
        let per_row = (s.d * s.n_head) as usize;
        let kv = (n_kv * s.d * s.n_head_kv) as usize;
        let at = row * s.n_kv as usize;
        Case {
            s: Shape { rows: 1, n_kv, ..s },
            q: self.q[row * per_row..(row + 1) * per_row].to_vec(),
            k: self.k[..kv].to_vec(),
            v: self.v[..kv].to_vec(),
            mask: self.mask[at..at + n_kv as usize].to_vec(),
            sinks: self.sinks.clone(),
            scale: self.scale,
        }
    }

    /// The rows' outputs, [rows][n_head][d], in f64.
    fn reference(&self) -> Vec<f32> {
        let s = self.s;
        let (d, g) = (s.d as usize, (s.n_head / s.n_head_kv) as usize);
        let mut out = Vec::new();
        for r in 0..s.rows as usize {
            for h in 0..s.n_head as usize {
                let hk = h / g;
                let q = &self.q[(r * s.n_head as usize + h) * d..][..d];
                let mut scores = Vec::new();
                for c in 0..s.n_kv as usize {
                    let m = self.mask[r * s.n_kv as usize + c];
                    if m == f32::NEG_INFINITY {
                        continue;
                    }
                    let k = &self.k[(c * s.n_head_kv as usize + hk) * d..][..d];
                    let dot: f64 = q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum();
                    scores.push((c, dot * self.scale as f64 + m as f64));
                }
                let sink = self.sinks.as_ref().map(|s| s[h] as f64);
                let max = scores.iter().map(|x| x.1).chain(sink).fold(f64::NEG_INFINITY, f64::max);
                let mut sum = sink.map_or(0.0, |s| (s - max).exp());
                let mut acc = vec![0f64; d];
                for &(c, sc) in &scores {
                    let p = (sc - max).exp();
                    sum += p;
                    let v = &self.v[(c * s.n_head_kv as usize + hk) * d..][..d];
                    for (a, &x) in acc.iter_mut().zip(v) {
                        *a += p * x as f64;
                    }
                }
                out.extend(acc.iter().map(|&a| if sum == 0.0 { 0.0 } else { (a / sum) as f32 }));
            }
        }
        out
    }

    /// Run decache's decoding kernel (`ours`) or ggml's fused attention on
    /// `threads`.
    fn run(&self, ours: bool, threads: usize) -> Vec<f32> {
        self.run_with(if ours { Kernel::Decode } else { Kernel::Ggml }, threads)
    }

    fn run_with(&self, kernel: Kernel, threads: usize) -> Vec<f32> {
        let s = self.s;
        let backend = Backend::cpu(threads);
        let mut sched = Scheduler::new(&[&backend], 64);
        let ctx = Context::new(64, 64);
        let q = ctx.new_input("q", GgmlType::F32, &[s.d, s.n_head, s.rows]);
        let k = ctx.new_input("k", GgmlType::F32, &[s.d * s.n_head_kv, s.n_kv]);
        let v = ctx.new_input("v", GgmlType::F32, &[s.d * s.n_head_kv, s.n_kv]);
        let mask = ctx.new_input("mask", GgmlType::F32, &[s.n_kv, s.rows]);
        let sinks = self.sinks.as_ref().map(|_| ctx.new_input("sinks", GgmlType::F32, &[s.n_head]));
        let (k16, v16, m16) = (ctx.cast(k, GgmlType::F16), ctx.cast(v, GgmlType::F16), ctx.cast(mask, GgmlType::F16));
        let heads = |t| ctx.reshape(t, &[s.d, s.n_head_kv, s.n_kv]);
        let args = KernelArgs { q, k: heads(k16), v: heads(v16), mask: m16, sinks, scale: self.scale };
        let out = if kernel == Kernel::Decode {
            ctx.decode_attention(args)
        } else if kernel == Kernel::Prefill {
            ctx.prefill_attention(args)
        } else {
            let perm = |t| ctx.permute(t, [0, 2, 1, 3]);
            let fa = ctx.flash_attn_ext(perm(q), perm(heads(k16)), perm(heads(v16)), m16, self.scale);
            if let Some(sk) = sinks {
                ctx.flash_attn_add_sinks(fa, sk);
            }
            fa
        };
        out.set_output();
        let mut g = ctx.new_graph(64);
        g.expand(out);
        sched.alloc(&g).unwrap();
        q.write_f32(&self.q);
        k.write_f32(&self.k);
        v.write_f32(&self.v);
        mask.write_f32(&self.mask);
        if let (Some(t), Some(x)) = (sinks, &self.sinks) {
            t.write_f32(x);
        }
        sched.compute(&g).unwrap();
        let mut got = Vec::new();
        out.read_f32_into(&mut got, 0, (s.d * s.n_head * s.rows) as usize);
        got
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kernel {
    Decode,
    Prefill,
    Ggml,
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn fits(s: Shape) -> bool {
    let ok = decode_attention_fits(s.n_head, s.n_head_kv, s.d, GgmlType::F16, GgmlType::F16);
    // The tests below need the kernel: on a CPU without AVX2/FMA/F16C the
    // engine keeps ggml's attention, and this says so rather than passing.
    assert!(ok || !cfg!(target_arch = "x86_64") || !std::is_x86_feature_detected!("avx2"), "kernel refused {}", s.d);
    ok
}

const SHAPES: [Shape; 4] = [
    // SmolLM2: 9 query heads on 3 K/V heads of 64.
    Shape { d: 64, n_head: 9, n_head_kv: 3, n_kv: 700, rows: 3 },
    // gemma-3-270m: 4 on 1 of 256.
    Shape { d: 256, n_head: 4, n_head_kv: 1, n_kv: 1030, rows: 2 },
    // No grouping, a head of 128, one query over more than one run.
    Shape { d: 128, n_head: 2, n_head_kv: 2, n_kv: 513, rows: 1 },
    // 8 per K/V head, a head of 72 (not a multiple of 16), under one run.
    Shape { d: 72, n_head: 8, n_head_kv: 1, n_kv: 100, rows: 4 },
];

#[test]
fn decode_attention_matches_an_exact_reference_closer_than_ggml() {
    for (i, &s) in SHAPES.iter().enumerate() {
        if !fits(s) {
            return;
        }
        for sinks in [false, true] {
            let case = Case::new(s, 7 + i as u64, 5, sinks);
            let want = case.reference();
            let ours = max_diff(&case.run(true, 2), &want);
            let ggml = max_diff(&case.run(false, 2), &want);
            eprintln!(
                "d {} heads {}/{} cells {} sinks {sinks}: ours {ours:.2e}, ggml {ggml:.2e}",
                s.d, s.n_head, s.n_head_kv, s.n_kv
            );
            assert!(ours < 2e-5, "shape {i}, sinks {sinks}: off the reference by {ours}");
            assert!(ours <= ggml, "shape {i}, sinks {sinks}: ours {ours}, ggml's {ggml}");
        }
    }
}

/// A row's result depends on its own query, mask row and cells only: not
/// on the threads, the other rows of its batch, or the cells past its own
/// that the batch attends. So a verified draft's rows are the lone steps'.
#[test]
fn a_rows_result_is_the_same_alone_in_a_batch_and_on_any_threads() {
    let s = SHAPES[0];
    if !fits(s) {
        return;
    }
    let batch = Case::new(Shape { rows: 6, n_kv: 1100, ..s }, 3, 7, true);
    let all = batch.run(true, 2);
    for threads in [1, 3] {
        assert!(all == batch.run(true, threads), "{threads} threads changed the bits");
    }
    // Each row alone, over the cells it sees (the batch's less the later
    // rows'), on one thread.
    rows_alone_match(&batch, &all, &[1]);
    // Across the first run's end: a lone row that sees one run of cells
    // (joined in the same op) against the batch's two runs (joined after).
    let across = Case::new(Shape { rows: 6, n_kv: 260, ..s }, 9, 5, true);
    rows_alone_match(&across, &across.run(true, 2), &[2]);
    // A shallow cache: a lone row's one run is split between the threads by
    // query heads, where a batch's runs are not.
    let shallow = Case::new(Shape { rows: 4, n_kv: 200, ..s }, 5, 0, false);
    rows_alone_match(&shallow, &shallow.run(true, 2), &[1, 2, 3]);
}

/// Each row of `batch` (whose outputs are `all`) alone, on each of
/// `threads`, gives the bits it has in the batch.
fn rows_alone_match(batch: &Case, all: &[f32], threads: &[usize]) {
    let s = batch.s;
    let per_row = (s.d * s.n_head) as usize;
    for row in 0..s.rows as usize {
        let n_kv = s.n_kv - s.rows + row as i64 + 1;
        let alone = batch.alone(row, n_kv);
        let want = &all[row * per_row..(row + 1) * per_row];
        for &t in threads {
            let got = alone.run(true, t);
            assert!(got == want, "row {row} ({n_kv} cells) on {t} threads: {} from in the batch", max_diff(&got, want));
        }
    }
}

/// A row that sees no cell gives zeros (as ggml's attention does), and one
/// that sees a single cell gives that cell's V.
#[test]
fn a_row_seeing_nothing_is_zero_and_one_cell_is_its_value() {
    let s = Shape { d: 64, n_head: 4, n_head_kv: 2, n_kv: 300, rows: 2 };
    if !fits(s) {
        return;
    }
    let mut case = Case::new(s, 11, 0, false);
    case.mask.fill(f32::NEG_INFINITY);
    case.mask[300 + 260] = 0.0;
    let got = case.run(true, 2);
    assert!(got[..256].iter().all(|&x| x == 0.0), "the blind row is not zero");
    for h in 0..4usize {
        let v = &case.v[(260 * 2 + h / 2) * 64..][..64];
        assert_eq!(&got[256 + h * 64..256 + (h + 1) * 64], v, "head {h}");
    }
}

/// The prefill kernel (blocks of rows, tiles of cells) on many causal rows,
/// with hidden cells inside and a partial last block and tile: within 2e-6
/// of the exact reference (ggml's tiled op sums in f32 too: as close), and
/// the same on any threads.
#[test]
fn prefill_attention_matches_an_exact_reference() {
    let shapes = [
        Shape { d: 64, n_head: 9, n_head_kv: 3, n_kv: 700, rows: 100 },
        Shape { d: 256, n_head: 4, n_head_kv: 1, n_kv: 300, rows: 70 },
        Shape { d: 72, n_head: 8, n_head_kv: 1, n_kv: 130, rows: 65 },
    ];
    for (i, &s) in shapes.iter().enumerate() {
        if !fits(s) {
            return;
        }
        for sinks in [false, true] {
            let case = Case::new(s, 21 + i as u64, 9, sinks);
            let want = case.reference();
            let got = case.run_with(Kernel::Prefill, 2);
            let ours = max_diff(&got, &want);
            let ggml = max_diff(&case.run_with(Kernel::Ggml, 2), &want);
            eprintln!(
                "prefill d {} heads {}/{} rows {} cells {} sinks {sinks}: ours {ours:.2e}, ggml {ggml:.2e}",
                s.d, s.n_head, s.n_head_kv, s.rows, s.n_kv
            );
            assert!(ours < 2e-6, "shape {i}, sinks {sinks}: off the reference by {ours}");
            assert!(got == case.run_with(Kernel::Prefill, 3), "shape {i}: 3 threads changed the bits");
        }
    }
}
