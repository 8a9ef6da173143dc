//! `decache info MODEL`: what a model file is.
use super::args::ModelArgs;
use super::load::load_model;
use clap::Args;

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// The model (path, known name or URL); default: SmolLM2-135M-Instruct.
    #[arg(value_name = "MODEL")]
    pub model: Option<String>,
    #[arg(long = "no-mmap")]
    pub no_mmap: bool,
}

pub fn run(a: &InfoArgs) -> Result<(), decache::Error> {
    let (model, load_ms) = load_model(&ModelArgs::path_only(a.model.clone(), a.no_mmap))?;
    let hp = &model.hparams;
    let i = &model.info;
    outln!("file:            {}", i.path.display());
    if let Some(n) = &i.name {
        outln!("name:            {n}");
    }
    outln!("architecture:    {}", hp.arch);
    outln!("parameters:      {} ({:.2} M)", i.n_params, i.n_params as f64 / 1e6);
    outln!("file size:       {} bytes ({:.2} MiB)", i.file_size, i.file_size as f64 / (1 << 20) as f64);
    outln!("file type:       {}", i.file_type.as_deref().unwrap_or("unknown"));
    let quants: Vec<String> = i.quant_types.iter().map(|(t, n)| format!("{t}: {n}")).collect();
    outln!("tensor types:    {}", quants.join(", "));
    outln!("context length:  {}", hp.n_ctx_train);
    outln!(
        "layers:          {} (embedding {}, heads {}, kv heads {}, head size {}, feed-forward {})",
        hp.n_layer,
        hp.n_embd,
        hp.n_head,
        hp.n_head_kv,
        hp.head_dim,
        hp.n_ff
    );
    if let Some(x) = &hp.experts {
        outln!("experts:         {} of {} per token, each {} wide (mixture of experts)", x.n_used, x.n_expert, x.n_ff);
    }
    if let Some(n) = hp.n_ff_shared.filter(|_| hp.experts.is_some()) {
        outln!("shared expert:   {n} wide, beside the routed ones");
    }
    if let Some(r) = &hp.recurrent {
        // One letter per layer: R is recurrent, A attends.
        let pattern: String = r.layers.iter().map(|&x| if x { 'R' } else { 'A' }).collect();
        outln!(
            "recurrent:       {} of {} layers ({pattern}): gated delta net, {} key / {} value heads of {}, convolution {} taps",
            r.n_recurrent(),
            hp.n_layer,
            r.n_k_heads,
            r.n_v_heads,
            r.d_state,
            r.d_conv
        );
        outln!(
            "recurrent state: {:.2} MiB per sequence (constant: it does not grow with the context)",
            (r.n_embd_r() + r.n_embd_s()) as f64 * 4.0 * r.n_recurrent() as f64 / (1 << 20) as f64
        );
    }
    if let Some(w) = &hp.swa {
        // One letter per layer: S slides, G sees everything.
        let pattern: String = w.layers.iter().map(|&s| if s { 'S' } else { 'G' }).collect();
        let n = w.layers.iter().filter(|&&s| s).count();
        outln!("sliding window:  {} tokens on {n} of {} layers ({pattern})", w.window, hp.n_layer);
    }
    if hp.layer_shapes {
        layer_shapes(hp);
    }
    let yarn = hp.yarn.map_or(String::new(), |y| {
        format!(", YaRN from {} positions (beta {}/{})", hp.n_ctx_orig, y.beta_fast, y.beta_slow)
    });
    let sections = hp.rope_sections.map_or(String::new(), |s| format!(", sections {s:?}"));
    outln!("rope:            base {}, scale {}, dims {}{yarn}{sections}", hp.rope_base, hp.rope_scale, hp.n_rot);
    if let Some(t) = hp.attn_temp {
        outln!("attention temp:  q x (1 + {} ln(floor(pos / {}) + 1))", t.scale, t.floor_scale);
    }
    outln!("vocabulary:      {} tokens, {}", hp.n_vocab, model.tokenizer.kind());
    let bufs: Vec<String> =
        i.buffers.iter().map(|(n, b)| format!("{n} {:.2} MiB", *b as f64 / (1 << 20) as f64)).collect();
    outln!("weights in:      {} (loaded in {load_ms:.1} ms)", bufs.join(", "));
    match model.tokenizer.chat_template() {
        Some(t) => outln!("chat template:\n{t}"),
        None => outln!("chat template:   none (ChatML is used)"),
    }
    Ok(())
}

/// The shapes of a model whose layers differ (Gemma 4): head sizes and kv
/// heads per kind of layer, FFN widths, shared-KV layers, per-layer inputs.
fn layer_shapes(hp: &decache::model::hparams::HParams) {
    let n = hp.n_layer as usize;
    let kind = |swa: bool| (0..n).find(|&il| hp.is_swa(il) == swa).map(|il| hp.layer(il));
    let heads = |l: &decache::model::hparams::LayerHp| format!("{} ({} kv)", l.head_dim, l.n_head_kv);
    match (kind(true), kind(false)) {
        (Some(s), Some(g)) => outln!(
            "layer shapes:    heads of {} on sliding-window layers, {} on global ones; rotary dims {} / {}",
            heads(s),
            heads(g),
            s.n_rot,
            g.n_rot
        ),
        (Some(l), None) | (None, Some(l)) => outln!("layer shapes:    heads of {}; rotary dims {}", heads(l), l.n_rot),
        (None, None) => {}
    }
    let ffs: Vec<String> = (0..n).map(|il| hp.layer(il).n_ff.to_string()).collect();
    if ffs.iter().any(|f| *f != ffs[0]) {
        outln!("feed-forward:    per layer {}", ffs.join(", "));
    }
    let shared: Vec<usize> = (0..n).filter(|&il| hp.layer(il).kv_from != il).collect();
    if let (Some(first), Some(last)) = (shared.first(), shared.last()) {
        let from: Vec<String> = shared.iter().map(|&il| hp.layer(il).kv_from.to_string()).collect();
        outln!("shared KV:       layers {first}-{last} read the cache of layers {} (they own none)", from.join(", "));
    }
    if hp.n_embd_per_layer > 0 {
        outln!("per-layer input: {} per layer (per-layer embeddings)", hp.n_embd_per_layer);
    }
}
