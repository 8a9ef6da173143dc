//! Resolve (and pull if needed) a model, then load it with a progress line.
use super::args::ModelArgs;
use super::pull::{render_event, PullProgress};
use decache::model::Model;
use std::sync::Arc;
use std::time::Instant;

pub fn load_model(args: &ModelArgs) -> Result<(Arc<Model>, f64), decache::Error> {
    let mut progress = PullProgress::new();
    let path = decache::pull::resolve_model(args.model.as_deref(), &mut |e| render_event(&mut progress, &e))?;
    progress.finish();
    let t0 = Instant::now();
    let model = Model::load(&path, &args.load_options())?;
    let n_layer = model.hparams.n_layer as usize + 1;
    for (device, n) in &model.info.offloaded {
        eprintln!("offloaded {n}/{n_layer} layers to {device}");
    }
    Ok((Arc::new(model), t0.elapsed().as_secs_f64() * 1e3))
}

/// Warn when `-c` asks for more positions than the model was trained on
/// (llama.cpp warns the same way: quality falls past that point).
pub fn warn_ctx(model: &Model, n_ctx: usize) {
    let train = model.hparams.n_ctx_train as usize;
    if n_ctx > train {
        eprintln!(
            "warning: -c {n_ctx} is beyond the {train} positions this model was trained on; text past them may degrade"
        );
    }
}
