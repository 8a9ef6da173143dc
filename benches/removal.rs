//! `cargo bench --bench removal` (criterion): the host-side cost of forgetting,
//! on the cell metadata that `Session::remove_range` and `Session::defrag`
//! work on. No model is needed: a `keep` removal runs no graph (asserted by
//! tests/decache_oracle.rs), so its latency is this one.
//!
//! - `keep_removal/<cells>/<pct>`: clear 1%, 10%, 90% of a full cache;
//! - `shift_after_removal/<cells>`: the `shift` policy's position update
//!   after removing 10% from the middle (the K rotation is a graph, timed by
//!   `decache bench --decache`);
//! - `defrag_plan/<cells>`: the moves that pack a cache with 75% forgotten;
//! - `decode_mask/<cells>`: one decode step's attention mask over a full cache.
//!
//! The user-facing benchmarks, beside llama.cpp, are `decache bench`
//! (docs/BENCHMARKS.md).
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use decache::kv::{mask::build_mask, Cells, Pos};
use std::hint::black_box;

const SIZES: [usize; 2] = [4096, 32768];

fn full(n: usize) -> Cells {
    let mut c = Cells::new(n, 1);
    for i in 0..n {
        c.fill(i, 0, i as Pos, 0);
    }
    c
}

/// `[p0, p0 + k)` in the middle of `n` positions.
fn middle(n: usize, k: usize) -> (Pos, Pos) {
    let p0 = ((n - k) / 2) as Pos;
    (p0, p0 + k as Pos)
}

fn keep_removal(c: &mut Criterion) {
    let mut g = c.benchmark_group("keep_removal");
    for n in SIZES {
        let cells = full(n);
        for pct in [1usize, 10, 90] {
            let (p0, p1) = middle(n, n * pct / 100);
            g.bench_with_input(BenchmarkId::new(n.to_string(), format!("{pct}%")), &(p0, p1), |b, &(p0, p1)| {
                b.iter_batched_ref(
                    || cells.clone(),
                    |c| black_box(c.remove_pos_range(0, p0, p1)),
                    BatchSize::LargeInput,
                )
            });
        }
    }
    g.finish();
}

fn shift_after_removal(c: &mut Criterion) {
    let mut g = c.benchmark_group("shift_after_removal");
    for n in SIZES {
        let (p0, p1) = middle(n, n / 10);
        let mut holed = full(n);
        holed.remove_pos_range(0, p0, p1);
        g.bench_with_input(BenchmarkId::from_parameter(n), &(p0, p1), |b, &(p0, p1)| {
            b.iter_batched_ref(
                || holed.clone(),
                |c| black_box(c.shift_positions(0, p1, p0 - p1).unwrap()),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn defrag_plan(c: &mut Criterion) {
    let mut g = c.benchmark_group("defrag_plan");
    for n in SIZES {
        let (p0, p1) = middle(n, n * 3 / 4);
        let mut holed = full(n);
        holed.remove_pos_range(0, p0, p1);
        g.bench_with_input(BenchmarkId::from_parameter(n), &holed, |b, holed| {
            b.iter(|| black_box(holed.defrag_moves()));
        });
    }
    g.finish();
}

fn decode_mask(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_mask");
    for n in SIZES {
        let cells = full(n);
        let q = [n as Pos];
        let mut out = Vec::new();
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                build_mask(&cells, n, &q, &[0], None, &mut out);
                black_box(out.len())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, keep_removal, shift_after_removal, defrag_plan, decode_mask);
criterion_main!(benches);
