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
    Ok((Arc::new(model), t0.elapsed().as_secs_f64() * 1e3))
}
