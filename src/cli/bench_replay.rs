//! `decache bench --replay`: the pruned-history replay as a table.
use super::bench::BenchArgs;
use super::run::chat_template;
use decache::bench::replay::{agent_requests, replay, ReplayTurn, Served};
use decache::model::Model;
use decache::session::SessionConfig;
use std::sync::Arc;

pub fn run(a: &BenchArgs, model: &Arc<Model>, threads: usize) -> Result<(), decache::Error> {
    if a.turns == 0 || a.window == 0 {
        return Err(decache::Error::InvalidArgument("--turns and --window must be at least 1".into()));
    }
    let template = chat_template(model, None)?;
    let requests = agent_requests(a.turns, a.window, a.placeholders);
    if let Some(path) = &a.write_prompts {
        let prompts = requests.iter().map(|m| template.render(m, true)).collect::<Result<Vec<_>, _>>()?;
        let json = serde_json::to_string_pretty(&prompts).expect("strings serialize");
        std::fs::write(path, json).map_err(|source| decache::Error::Io { path: path.clone(), source })?;
        outln!("wrote {} prompts to {}", prompts.len(), path.display());
        return Ok(());
    }
    // A cache big enough for the longest request, as a server would be given.
    let longest = requests.last().map(|m| template.render(m, true)).transpose()?.map_or(0, |t| t.len());
    let n_ctx = a.ctx_size.max((longest / 2).next_multiple_of(1024));
    let cfg = SessionConfig {
        n_ctx,
        n_batch: a.batch_size,
        n_ubatch: a.ubatch_size,
        n_threads: threads,
        swa_full: a.swa_full,
        ..SessionConfig::default()
    };
    let oracle = if a.llama { Some(super::bench::load_oracle(a, model)?) } else { None };
    let rows = replay(model, &template, &requests, &cfg, oracle.as_ref(), a.subconscious_min)?;
    let llama = oracle.is_some();
    let cell = |s: &Served| format!("{} | {:.0}", s.prefilled, s.ttft_ms);
    outln!(
        "replay: {} turns, reads kept {} turns{}, {n_ctx} cells, {threads} threads, chunks > {} tokens",
        a.turns,
        a.window,
        if a.placeholders { " (then replaced by a placeholder)" } else { "" },
        a.subconscious_min
    );
    outln!();
    let head = if llama { " llama.cpp prefilled | llama.cpp TTFT ms |" } else { "" };
    outln!("| turn | prompt | subconscious prefilled | subconscious TTFT ms | spans replaced | prefix-only prefilled | prefix-only TTFT ms |{head}");
    outln!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |{}", if llama { " ---: | ---: |" } else { "" });
    for r in &rows {
        let l = r.llama.as_ref().map(|s| format!(" {} |", cell(s))).unwrap_or_default();
        outln!(
            "| {} | {} | {} | {} | {} |{l}",
            r.turn,
            r.prompt,
            cell(&r.subconscious),
            r.subconscious.spans_replaced,
            cell(&r.prefix_only)
        );
    }
    let total = |f: &dyn Fn(&ReplayTurn) -> Option<Served>, rows: &[ReplayTurn]| {
        rows.iter().filter_map(f).fold((0usize, 0f64), |(n, t), s| (n + s.prefilled, t + s.ttft_ms))
    };
    // Steady state: turns where the client drops a file read (the window is full).
    let steady: Vec<ReplayTurn> = rows.iter().filter(|r| r.turn > a.window).cloned().collect();
    for (name, part) in [("all turns", &rows[..]), ("turns that prune an old file read", &steady[..])] {
        if part.is_empty() {
            continue;
        }
        let (sn, st) = total(&|r| Some(r.subconscious), part);
        let (pn, pt) = total(&|r| Some(r.prefix_only), part);
        outln!();
        outln!("{name} ({}): subconscious {sn} tokens prefilled, {st:.0} ms to first tokens; prefix-only {pn} tokens, {pt:.0} ms", part.len());
        outln!(
            "  prefix-only / subconscious: {:.1}x the tokens prefilled, {:.1}x the time to first token",
            pn as f64 / sn.max(1) as f64,
            pt / st.max(1e-9)
        );
        if llama {
            let (ln, lt) = total(&|r| r.llama, part);
            outln!(
                "  llama.cpp (prefix + --cache-reuse {}): {ln} tokens, {lt:.0} ms: {:.1}x the tokens, {:.1}x the time of the subconscious cache",
                a.subconscious_min + 1,
                ln as f64 / sn.max(1) as f64,
                lt / st.max(1e-9)
            );
        }
    }
    Ok(())
}
