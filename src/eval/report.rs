//! `decache eval --report DIR`: a markdown report with SVG charts (quality
//! against tokens kept, time and divergence per turn) over the sets run.
//! The charts need the `eval-plots` feature (plotters, on by default); without
//! it the report is the markdown tables alone.
use super::SetResult;
#[cfg(feature = "eval-plots")]
use plotters::prelude::*;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What the report says about how it was made.
pub struct ReportMeta {
    pub command: String,
    pub model: String,
    pub threads: usize,
}

#[cfg(feature = "eval-plots")]
const COLORS: [RGBColor; 6] = [
    RGBColor(0, 0, 0),
    RGBColor(230, 159, 0),
    RGBColor(0, 114, 178),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(213, 94, 0),
];

/// One point of a chart from a set and a strategy (none when it has no value).
#[cfg(feature = "eval-plots")]
type PointOf<'a> = dyn Fn(&SetResult, &super::StrategyResult) -> Option<(f64, f64)> + 'a;

/// The strategies in the order the results hold them.
fn strategy_names(results: &[SetResult]) -> Vec<&str> {
    let mut names: Vec<&str> = Vec::new();
    for r in results {
        for s in &r.strategies {
            if !names.contains(&s.strategy.as_str()) {
                names.push(&s.strategy);
            }
        }
    }
    names
}

#[cfg(feature = "eval-plots")]
fn color(names: &[&str], name: &str) -> RGBColor {
    COLORS[names.iter().position(|n| *n == name).unwrap_or(0) % COLORS.len()]
}

/// One point per strategy and set; lines join a strategy's points when `lines`.
#[cfg(feature = "eval-plots")]
struct Chart<'a> {
    title: &'a str,
    x: &'a str,
    y: &'a str,
    log_y: bool,
    lines: bool,
}

#[cfg(feature = "eval-plots")]
const LOG_FLOOR: f64 = 1e-4;

#[cfg(feature = "eval-plots")]
fn draw(path: &Path, c: &Chart, names: &[&str], series: &[(&str, Vec<(f64, f64)>)]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let pts = series.iter().flat_map(|(_, p)| p.iter().copied());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts {
        let y = if c.log_y { y.max(LOG_FLOOR) } else { y };
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, LOG_FLOOR, 1.0);
    }
    let pad = |a: f64, b: f64| ((b - a) * 0.08).max(1e-9);
    let (px, py) = (pad(x0, x1), pad(y0, y1));
    let root = SVGBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut b = ChartBuilder::on(&root);
    b.caption(c.title, ("sans-serif", 18)).margin(14).x_label_area_size(44).y_label_area_size(70);
    let xr = x0 - px..x1 + px;
    macro_rules! body {
        ($chart:expr, $fix:expr) => {{
            let mut chart = $chart;
            chart.configure_mesh().x_desc(c.x).y_desc(c.y).draw().map_err(|e| err(&e))?;
            for (name, p) in series {
                let col = color(names, name);
                let p: Vec<(f64, f64)> = p.iter().map(|&(x, y)| (x, $fix(y))).collect();
                if c.lines {
                    chart.draw_series(LineSeries::new(p.clone(), col.stroke_width(2))).map_err(|e| err(&e))?;
                }
                chart
                    .draw_series(p.iter().map(|&q| Circle::new(q, 4, col.filled())))
                    .map_err(|e| err(&e))?
                    .label(*name)
                    .legend(move |(x, y)| Circle::new((x + 8, y), 4, col.filled()));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
        }};
    }
    if c.log_y {
        let chart = b.build_cartesian_2d(xr, ((y0 * 0.7)..(y1 * 1.4)).log_scale()).map_err(|e| err(&e))?;
        body!(chart, |y: f64| y.max(LOG_FLOOR));
    } else {
        let chart = b.build_cartesian_2d(xr, (y0 - py).min(0.0)..y1 + py).map_err(|e| err(&e))?;
        body!(chart, |y: f64| y);
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn fmt_opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or("–".into(), f)
}

/// Write `README.md` and the charts (with `eval-plots`) into `dir`; returns the files written.
pub fn write(dir: &Path, results: &[SetResult], meta: &ReportMeta) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let names = strategy_names(results);
    #[cfg(feature = "eval-plots")]
    let mut files = charts(dir, results, &names)?;
    #[cfg(not(feature = "eval-plots"))]
    let mut files = Vec::new();

    let md = dir.join("README.md");
    std::fs::write(&md, markdown(results, meta, &names)).map_err(|e| format!("{}: {e}", md.display()))?;
    files.push(md);
    Ok(files)
}

/// The three SVG charts, written into `dir`.
#[cfg(feature = "eval-plots")]
fn charts(dir: &Path, results: &[SetResult], names: &[&str]) -> Result<Vec<PathBuf>, String> {
    let mut files = Vec::new();

    // Quality against tokens kept: one point per strategy and set.
    let kept = |r: &SetResult, s: &super::StrategyResult| s.mean_live() / r.total_tokens.max(1) as f64;
    let series = |f: &PointOf<'_>| -> Vec<(&str, Vec<(f64, f64)>)> {
        names
            .iter()
            .filter(|&&n| n != "full")
            .map(|&n| {
                (
                    n,
                    results
                        .iter()
                        .flat_map(|r| r.strategies.iter().filter(|s| s.strategy == n).filter_map(|s| f(r, s)))
                        .collect(),
                )
            })
            .collect()
    };
    let q = dir.join("quality-vs-kept.svg");
    let chart = Chart {
        title: "Divergence from full context vs. share of the conversation kept",
        x: "mean cells kept / tokens in the conversation",
        y: "mean KL(full || strategy), log",
        log_y: true,
        lines: false,
    };
    draw(&q, &chart, names, &series(&|r, s| s.mean_vs_full().map(|c| (kept(r, s), c.kl))))?;
    files.push(q);

    // Per turn, summed (time) or averaged (KL) over the sets that have it.
    let max_turn = results.iter().map(|r| r.turns).max().unwrap_or(0);
    let per_turn = |f: &dyn Fn(&super::TurnResult) -> Option<f64>, mean: bool| -> Vec<(&str, Vec<(f64, f64)>)> {
        names
            .iter()
            .map(|&n| {
                let pts = (1..=max_turn)
                    .filter_map(|t| {
                        let v: Vec<f64> = results
                            .iter()
                            .flat_map(|r| r.strategies.iter().filter(|s| s.strategy == n))
                            .flat_map(|s| s.turns.iter().filter(|x| x.turn == t))
                            .filter_map(f)
                            .collect();
                        let sum: f64 = v.iter().sum();
                        (!v.is_empty()).then(|| (t as f64, if mean { sum / v.len() as f64 } else { sum }))
                    })
                    .collect();
                (n, pts)
            })
            .collect()
    };
    let tp = dir.join("time-per-turn.svg");
    let chart = Chart {
        title: "Wall time per turn (all sets)",
        x: "turn",
        y: "ms, summed over the sets",
        log_y: false,
        lines: true,
    };
    draw(&tp, &chart, names, &per_turn(&|t| Some(t.ms), false))?;
    files.push(tp);
    let kp = dir.join("kl-per-turn.svg");
    let chart = Chart {
        title: "Divergence from full context per turn (mean over sets)",
        x: "turn",
        y: "KL(full || strategy), log",
        log_y: true,
        lines: true,
    };
    let kl_series: Vec<_> =
        per_turn(&|t| t.vs_full.map(|c| c.kl), true).into_iter().filter(|(n, _)| *n != "full").collect();
    draw(&kp, &chart, names, &kl_series)?;
    files.push(kp);
    Ok(files)
}

/// Token-weighted means over every set, per strategy.
pub struct Overall {
    pub strategy: String,
    pub kl_full: Option<f64>,
    pub top1_full: Option<f64>,
    pub kl_recompute: Option<f64>,
    pub top1_recompute: Option<f64>,
    /// Top-1 agreement with full context on the closing question's turn.
    pub question_top1: Option<f64>,
    /// Mean over sets of answer perplexity / full context's.
    pub ppl_ratio: Option<f64>,
    /// Mean over sets of answer perplexity / recompute's.
    pub ppl_vs_recompute: Option<f64>,
    pub kept: f64,
    pub prefilled: usize,
    pub seconds: f64,
}

pub fn overall(results: &[SetResult]) -> Vec<Overall> {
    let names = strategy_names(results);
    names
        .iter()
        .map(|&n| {
            let runs: Vec<(&SetResult, &super::StrategyResult)> = results
                .iter()
                .flat_map(|r| r.strategies.iter().filter(|s| s.strategy == n).map(move |s| (r, s)))
                .collect();
            let weighted = |f: &dyn Fn(&super::StrategyResult) -> Option<f64>| {
                let (mut n, mut v) = (0.0, 0.0);
                for (r, s) in &runs {
                    if let Some(x) = f(s) {
                        n += r.total_tokens as f64;
                        v += x * r.total_tokens as f64;
                    }
                }
                (n > 0.0).then(|| v / n)
            };
            let ratio_to = |reference: &str| -> Option<f64> {
                let v: Vec<f64> = runs
                    .iter()
                    .filter_map(|(r, s)| {
                        r.strategies.iter().find(|f| f.strategy == reference).map(|f| s.answer_ppl / f.answer_ppl)
                    })
                    .filter(|x| x.is_finite())
                    .collect();
                (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
            };
            Overall {
                strategy: n.to_string(),
                kl_full: weighted(&|s| s.mean_vs_full().map(|c| c.kl)),
                top1_full: weighted(&|s| s.mean_vs_full().map(|c| c.top1)),
                kl_recompute: weighted(&|s| s.mean_vs_recompute().map(|c| c.kl)),
                top1_recompute: weighted(&|s| s.mean_vs_recompute().map(|c| c.top1)),
                question_top1: weighted(&|s| s.question_vs_full().map(|c| c.top1)),
                ppl_ratio: ratio_to("full"),
                ppl_vs_recompute: ratio_to("recompute"),
                kept: runs.iter().map(|(r, s)| s.mean_live() / r.total_tokens.max(1) as f64).sum::<f64>()
                    / runs.len().max(1) as f64,
                prefilled: runs.iter().map(|(_, s)| s.prefilled()).sum(),
                seconds: runs.iter().map(|(_, s)| s.seconds()).sum(),
            }
        })
        .collect()
}

fn markdown(results: &[SetResult], meta: &ReportMeta, names: &[&str]) -> String {
    let mut m = String::new();
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    let kl = |x: f64| format!("{x:.4}");
    let _ = writeln!(m, "# decache eval report\n");
    let _ = writeln!(m, "Made with:\n\n```\n{}\n```\n", meta.command);
    let _ = writeln!(
        m,
        "Model `{}`, {} threads, {} sets. Strategies: {}.\n",
        meta.model,
        meta.threads,
        results.len(),
        names.join(", ")
    );
    let _ = writeln!(
        m,
        "KL is the mean over every evaluated token of KL(reference ‖ strategy) of the next-token \
         distributions; top-1 is how often the most likely next token is the same. Means are weighted \
         by tokens. *Kept* is the mean share of the conversation's tokens live in the cache after each turn. \
         *PPL ratio* is the perplexity of the reference answer to the closing question, divided by full \
         context's (1.00 = no loss); *PPL / recompute's* divides it by the recompute's instead (the mean \
         over sets of the per-set ratios). Time is wall time for all turns, summaries and re-prefills \
         included.\n"
    );
    let _ = writeln!(m, "## All sets\n");
    let _ = writeln!(m, "| strategy | KL vs full | top-1 vs full | KL vs recompute | top-1 vs recompute | question top-1 vs full | PPL ratio | PPL / recompute's | kept | tokens evaluated | seconds |");
    let _ = writeln!(m, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for o in overall(results) {
        let _ = writeln!(
            m,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} |",
            o.strategy,
            fmt_opt(o.kl_full, kl),
            fmt_opt(o.top1_full, pct),
            fmt_opt(o.kl_recompute, kl),
            fmt_opt(o.top1_recompute, pct),
            fmt_opt(o.question_top1, pct),
            fmt_opt(o.ppl_ratio, |x| format!("{x:.2}")),
            fmt_opt(o.ppl_vs_recompute, |x| format!("{x:.3}")),
            pct(o.kept),
            o.prefilled,
            o.seconds
        );
    }
    if cfg!(feature = "eval-plots") {
        let _ = writeln!(m, "\n![quality vs kept](quality-vs-kept.svg)\n\n![time per turn](time-per-turn.svg)\n\n![KL per turn](kl-per-turn.svg)\n");
    } else {
        let _ = writeln!(m);
    }
    for r in results {
        let _ = writeln!(m, "## {}\n", r.name);
        if !r.description.is_empty() {
            let _ = writeln!(m, "{}\n", r.description.trim());
        }
        let kinds: Vec<String> = r.decached_by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            m,
            "{} turns, {} tokens; the annotations decache {} (tokens by kind); the cache holds at most {} cells under them, \
             the budget compaction and the window get.\n",
            r.turns,
            r.total_tokens,
            if kinds.is_empty() { "nothing".into() } else { kinds.join(", ") },
            r.budget
        );
        for (s, why) in &r.skipped {
            let _ = writeln!(m, "Skipped `{s}`: {why}.\n");
        }
        let _ = writeln!(m, "| strategy | KL vs full | top-1 vs full | KL vs recompute | answer PPL | peak cells | mean cells | tokens evaluated | seconds |");
        let _ = writeln!(m, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
        for s in &r.strategies {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} | {:.2} | {} | {:.0} | {} | {:.2} |",
                s.strategy,
                fmt_opt(s.mean_vs_full().map(|c| c.kl), kl),
                fmt_opt(s.mean_vs_full().map(|c| c.top1), pct),
                fmt_opt(s.mean_vs_recompute().map(|c| c.kl), kl),
                s.answer_ppl,
                s.peak_live(),
                s.mean_live(),
                s.prefilled(),
                s.seconds()
            );
        }
        for s in r.strategies.iter().filter(|s| !s.summaries.is_empty()) {
            let _ = writeln!(m, "\nThe summaries `{}` wrote:\n", s.strategy);
            for t in &s.summaries {
                let _ = writeln!(m, "> {}\n", t.trim().replace('\n', " "));
            }
        }
        let _ = writeln!(m);
    }
    m
}
