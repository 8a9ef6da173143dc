//! `cargo bench --bench removal`: the cost of a `keep` removal (clearing live
//! bits, no graph) for 1%, 10% and 90% of 4k and 32k cells. The user-facing
//! benchmarks, beside llama.cpp, are `decache bench` (see docs/BENCHMARKS.md).
fn main() {
    println!("| cells | removed | removal (keep) |");
    println!("| ----: | ------: | -------------: |");
    for n in [4096usize, 32768] {
        for pct in [1usize, 10, 90] {
            let k = n * pct / 100;
            let s = decache::bench::removal_latency(n, k);
            println!("| {n} | {k} ({pct}%) | {:.1} µs |", s * 1e6);
        }
    }
}
