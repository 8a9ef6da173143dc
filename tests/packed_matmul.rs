//! decache's products of packed Q4_1 and Q5_0 weights (`Context::use_packed`)
//! against an exact reference in f64 and against ggml-cpu's own product,
//! on random weights (no model needed).
use decache::ggml::{packs, Backend, Context, GgmlType, PackedWeights, Placement, Scheduler, TensorSpec, TensorStore};
use std::borrow::Cow;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) as u32
    }

    /// In [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() % 65536) as f32 / 32768.0 - 1.0
    }
}

/// One block of a weight row: its unsigned values, scale and minimum.
struct Block {
    u: Vec<u8>,
    d: f32,
    min: f32,
}

/// A random weight [k, m] of `typ` (Q4_1 or Q5_0): its file bytes, its
/// exact values (row-major [m][k]) and its blocks.
fn weight(typ: GgmlType, k: usize, m: usize, seed: u64) -> (Vec<u8>, Vec<f64>, Vec<Block>) {
    let mut r = Rng(seed);
    let (mut bytes, mut values, mut blocks) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..m * k / 32 {
        // Scales that f16 holds exactly: multiples of 2^-12 up to 1/16.
        let d = (1 + r.next() % 256) as f32 / 4096.0;
        let min = -((1 + r.next() % 512) as f32) / 4096.0;
        let u: Vec<u8> = (0..32).map(|_| (r.next() % if typ == GgmlType::Q4_1 { 16 } else { 32 }) as u8).collect();
        bytes.extend(half(d).to_le_bytes());
        if typ == GgmlType::Q4_1 {
            bytes.extend(half(min).to_le_bytes());
            bytes.extend((0..16).map(|i| u[i] | (u[i + 16] << 4)));
            values.extend(u.iter().map(|&x| d as f64 * x as f64 + min as f64));
        } else {
            let qh = (0..32).fold(0u32, |a, i| a | (((u[i] >> 4) as u32 & 1) << i));
            bytes.extend(qh.to_le_bytes());
            bytes.extend((0..16).map(|i| (u[i] & 15) | ((u[i + 16] & 15) << 4)));
            values.extend(u.iter().map(|&x| d as f64 * (x as f64 - 16.0)));
        }
        blocks.push(Block { u, d, min });
    }
    (bytes, values, blocks)
}

/// f32 to f16 bits, for the exactly representable scales above.
fn half(x: f32) -> u16 {
    let b = x.to_bits();
    let e = ((b >> 23) & 0xFF) as i32 - 112;
    assert!(e > 0 && b & 0x1FFF == 0, "{x} is not an f16 here");
    (((b >> 16) & 0x8000) as u16) | ((e as u16) << 10) | ((b >> 13) & 0x3FF) as u16
}

/// f32 rounded to f16's precision (to nearest even; normal values).
fn f16_round(x: f32) -> f32 {
    if x == 0.0 {
        return x;
    }
    let b = x.to_bits();
    let e = ((b >> 23) & 0xFF) as i32 - 127;
    assert!((-14..=15).contains(&e), "{x} is outside f16's normal range");
    let rest = b & 0x1FFF;
    let mut r = b & !0x1FFF;
    if rest > 0x1000 || (rest == 0x1000 && (r >> 13) & 1 == 1) {
        r += 0x2000;
    }
    f32::from_bits(r)
}

/// A block of 32 activations quantized as ggml quantizes them for these
/// types (q8_1): the values q, the f16 scale and the f16 dx·Σq.
fn quantized(x: &[f32]) -> (Vec<i32>, f64, f64) {
    let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let q: Vec<i32> = x.iter().map(|v| (v * id).round_ties_even() as i32).collect();
    let d = amax / 127.0;
    let sum: i32 = q.iter().sum();
    (q, f16_round(d) as f64, f16_round(d * sum as f32) as f64)
}

struct Case {
    typ: GgmlType,
    k: usize,
    m: usize,
    n: usize,
    bytes: Vec<u8>,
    w: Vec<f64>,
    blocks: Vec<Block>,
    x: Vec<f32>,
}

impl Case {
    fn new(typ: GgmlType, k: usize, m: usize, n: usize, seed: u64) -> Case {
        let (bytes, w, blocks) = weight(typ, k, m, seed);
        let mut r = Rng(seed ^ 0x5EED);
        let x = (0..k * n).map(|_| r.unit()).collect();
        Case { typ, k, m, n, bytes, w, blocks, x }
    }

    /// W·x in f64, with x as given (`exact`), or quantized as ggml quantizes
    /// it and each block's sum as ggml's kernels form it (Q4_1:
    /// d·dx·Σuq + m·s; Q5_0: d·dx·Σ(u - 16)q).
    fn reference(&self, exact: bool) -> Vec<f64> {
        let mut out = Vec::new();
        let nb = self.k / 32;
        for c in 0..self.n {
            let col = &self.x[c * self.k..(c + 1) * self.k];
            let xq: Vec<_> = col.chunks(32).map(quantized).collect();
            for row in 0..self.m {
                out.push(if exact {
                    self.w[row * self.k..(row + 1) * self.k].iter().zip(col).map(|(a, &b)| a * b as f64).sum()
                } else {
                    let blocks = &self.blocks[row * nb..(row + 1) * nb];
                    blocks
                        .iter()
                        .zip(&xq)
                        .map(|(w, (q, dx, s))| {
                            let uq: i32 = w.u.iter().zip(q).map(|(&u, &q)| u as i32 * q).sum();
                            if self.typ == GgmlType::Q4_1 {
                                w.d as f64 * dx * uq as f64 + w.min as f64 * s
                            } else {
                                w.d as f64 * dx * (uq - 16 * q.iter().sum::<i32>()) as f64
                            }
                        })
                        .sum()
                });
            }
        }
        out
    }

    /// The product on `threads`, packed (decache's) or ggml's, columns
    /// `cols` of x only.
    fn run(&self, packed: bool, threads: usize, cols: std::ops::Range<usize>) -> Vec<f32> {
        let backend = Backend::cpu(threads);
        let buft = backend.buffer_type();
        let ne = [self.k as i64, self.m as i64, 1, 1];
        let store = TensorStore::allocate(&[("w".to_string(), self.typ, ne[..2].to_vec(), buft)]).unwrap();
        let wt = store.get(store.nth(0));
        wt.write_bytes(&self.bytes, 0);
        let spec = TensorSpec {
            name: "w".into(),
            source: "w".into(),
            typ: self.typ,
            ne,
            n_dims: 2,
            file_offset: 0,
            placement: Placement::Upload(buft),
        };
        let pw = PackedWeights::pack(&store, &[&spec], buft, |_| Ok::<_, ()>(Cow::Borrowed(&self.bytes[..])))
            .unwrap()
            .expect("packed");
        assert_eq!(pw.len(), 1);
        let mut sched = Scheduler::new(&[&backend], 64);
        let ctx = Context::new(64, 64);
        if packed {
            ctx.use_packed(&pw);
        }
        let n = cols.len();
        let x = ctx.new_input("x", GgmlType::F32, &[self.k as i64, n as i64]);
        let y = ctx.mul_mat(wt, x);
        y.set_output();
        let mut g = ctx.new_graph(64);
        g.expand(y);
        sched.alloc(&g).unwrap();
        x.write_f32(&self.x[cols.start * self.k..cols.end * self.k]);
        sched.compute(&g).unwrap();
        assert_eq!(g.describe().iter().any(|l| l.contains("CUSTOM")), packed, "{:?}", g.describe());
        let mut got = Vec::new();
        y.read_f32_into(&mut got, 0, self.m * n);
        got
    }
}

fn max_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max)
}

fn mean_diff(a: &[f32], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (*x as f64 - y).abs()).sum::<f64>() / a.len() as f64
}

/// SmolLM2's q and gate products (Q4_1), gemma-3's (Q5_0), one column, a
/// few (a partial tile) and a batch.
fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (i, &(typ, k, m)) in [
        (GgmlType::Q4_1, 576, 576),
        (GgmlType::Q4_1, 576, 1536),
        (GgmlType::Q5_0, 640, 2048),
        (GgmlType::Q5_0, 2048, 640),
    ]
    .iter()
    .enumerate()
    {
        for (j, n) in [1, 3, 70].into_iter().enumerate() {
            v.push(Case::new(typ, k, m, n, (10 * i + j) as u64 + 1));
        }
    }
    v
}

fn kernel_here() -> bool {
    let ok = packs(GgmlType::Q4_1, [576, 576, 1, 1]);
    // Without AVX2/FMA/F16C the engine keeps ggml's products, and this says
    // so rather than passing.
    assert!(ok || !cfg!(target_arch = "x86_64") || !std::is_x86_feature_detected!("avx2"), "packing refused");
    ok
}

#[test]
fn packed_products_match_an_exact_reference_and_ggml() {
    if !kernel_here() {
        return;
    }
    for c in cases() {
        let ours = c.run(true, 2, 0..c.n);
        // ggml's product column by column (a batch of Q5_0 takes another kernel).
        let ggml: Vec<f32> = (0..c.n).flat_map(|col| c.run(false, 2, col..col + 1)).collect();
        let same_x = c.reference(false);
        let exact = c.reference(true);
        let scale = exact.iter().fold(0f64, |a, v| a.max(v.abs()));
        // With x quantized as ggml quantizes it, only f32 rounding is left.
        let e = max_diff(&ours, &same_x);
        assert!(e < 2e-6 * scale, "{:?} [{}, {}] n {}: {e} off the reference (scale {scale})", c.typ, c.k, c.m, c.n);
        // ggml's own product, bit for bit.
        let to_ggml = ours.iter().zip(&ggml).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) as f64;
        assert!(ours == ggml, "{to_ggml} from ggml's product (scale {scale})");
        // Against the unquantized x, as close as ggml's.
        let (ours_e, ggml_e) = (mean_diff(&ours, &exact), mean_diff(&ggml, &exact));
        eprintln!(
            "{} [{}, {}] n {}: max {e:.2e} vs same x, {to_ggml:.2e} vs ggml; mean {ours_e:.3e} ours, {ggml_e:.3e} ggml vs exact (scale {scale:.2})",
            c.typ.name(), c.k, c.m, c.n
        );
        assert!(ours_e <= 1.05 * ggml_e, "ours {ours_e} ggml {ggml_e}");
        assert!(max_diff(&ours, &exact) < 0.02 * scale);
    }
}

#[test]
fn a_column_is_the_same_alone_in_a_batch_and_on_any_threads() {
    if !kernel_here() {
        return;
    }
    for c in cases().into_iter().filter(|c| c.n > 1) {
        let all = c.run(true, 2, 0..c.n);
        for threads in [1, 2, 3] {
            assert_eq!(c.run(true, threads, 0..c.n), all, "{threads} threads");
        }
        for col in [0, 1, c.n - 1] {
            let alone = c.run(true, 2, col..col + 1);
            assert_eq!(alone, all[col * c.m..(col + 1) * c.m], "{:?} column {col}", c.typ);
        }
    }
}

#[test]
fn only_q4_1_and_q5_0_in_rows_of_eight_are_packed() {
    if !kernel_here() {
        return;
    }
    assert!(packs(GgmlType::Q5_0, [64, 16, 1, 1]));
    assert!(!packs(GgmlType::Q8_0, [64, 16, 1, 1]));
    assert!(!packs(GgmlType::Q4_1, [64, 12, 1, 1]));
    assert!(!packs(GgmlType::Q4_1, [64, 16, 4, 1]));
}
