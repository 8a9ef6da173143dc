//! `decache serve`: the OpenAI-compatible server. The socket is bound first,
//! then the model loads (`/health` says 503 until it is ready); Ctrl-C stops
//! the server gracefully.
use super::args::{ContextArgs, DecacheArgs, ModelArgs, SamplingArgs};
use super::pull::{render_event, PullProgress};
use super::run::chat_template;
use clap::Args;
use decache::model::Model;
use decache::server::engine::{Engine, EngineConfig};
use decache::server::{router, AppState, ServerOptions};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub ctx: ContextArgs,
    /// Defaults for requests that leave sampling fields out.
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Address to listen on.
    #[arg(long = "host", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long = "port", default_value_t = 8080)]
    pub port: u16,
    /// Parallel sequences (slots), which share one cache of -c cells: their
    /// tokens are computed together, a prefix one computed (a shared system
    /// prompt) is held once for all, and an idle slot's cells go to a busy
    /// one when the cache fills (also -np).
    #[arg(long = "parallel", default_value_t = 1)]
    pub parallel: usize,
    /// Requests that may wait for a slot before new ones get 503.
    #[arg(long = "queue", default_value_t = 32)]
    pub queue: usize,
    /// A subconscious hit needs a matching chunk longer than this many tokens.
    #[arg(long = "subconscious-min", default_value_t = 8)]
    pub subconscious_min: usize,
    /// Plain prefix caching only (for comparison).
    #[arg(long = "no-subconscious")]
    pub no_subconscious: bool,
    /// Require this key (Authorization: Bearer KEY or x-api-key: KEY) on API routes.
    #[arg(long = "api-key")]
    pub api_key: Option<String>,
    /// The model's name for clients (default: the file name without .gguf).
    #[arg(long = "alias")]
    pub alias: Option<String>,
    /// Refuse requests naming another model (404 `model_not_found`); by
    /// default any name is answered by the loaded model, as llama-server
    /// does (`--any-model`, the old opt-in, is accepted and changes nothing).
    #[arg(long = "strict-model")]
    pub strict_model: bool,
    #[arg(long = "any-model", hide = true)]
    pub any_model: bool,
    /// Largest request body in MiB.
    #[arg(long = "max-body-mb", default_value_t = 16)]
    pub max_body_mb: usize,
    /// Use this Jinja chat template instead of the model's.
    #[arg(long = "chat-template-file")]
    pub chat_template_file: Option<PathBuf>,
    /// Never prune requests; a prompt longer than the context is refused instead.
    #[arg(long = "no-auto-prune", alias = "no-auto-compaction")]
    pub no_auto_prune: bool,
    /// Seconds of quiet after which a stream gets a `: keep-alive` comment
    /// (so that proxies and clients wait through a long prefill).
    #[arg(long = "sse-keep-alive", default_value_t = 5.0, value_parser = positive_secs)]
    pub sse_keep_alive: f64,
    /// Write a transcript of each slot's session into this folder (see
    /// `decache replay`); one file per slot, spanning its requests.
    #[arg(long = "transcripts", value_name = "DIR")]
    pub transcripts: Option<std::path::PathBuf>,
    /// Tokens any request may generate at most, whatever it asks (-1: no
    /// cap). Harnesses ask for 32,000 or more, or send no limit; the cap
    /// keeps a small model that never stops from filling the context.
    #[arg(short = 'n', long = "n-predict", default_value_t = 4096, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// MiB of memory for chains pushed out of a slot (the prompt cache): a
    /// harness's title or sub-agent request does not cost the main
    /// conversation its cache. 0 turns it off.
    #[arg(long = "cache-ram", value_name = "MiB", default_value_t = 8192)]
    pub cache_ram: usize,
    /// Answer from this script instead of sampling (replies separated by
    /// `---` lines, with optional `@when` / `@keep` directives; see the
    /// README): a scripted model, every token still through the cache, so
    /// real clients can be driven through tool loops deterministically.
    #[arg(long = "script", value_name = "FILE")]
    pub script: Option<PathBuf>,
    /// Write each request (method, path, status, body) into this folder as
    /// NNNNN.json: what a client sends, to replay or benchmark it.
    #[arg(long = "record-requests", value_name = "DIR")]
    pub record_requests: Option<PathBuf>,
    #[command(flatten)]
    pub decache: DecacheArgs,
}

pub fn run(a: &ServeArgs) -> Result<(), decache::Error> {
    let positions = a.decache.positions()?; // checked before the model loads
    if a.parallel == 0 || a.parallel > 64 {
        return Err(decache::Error::InvalidArgument(format!("-np {}: between 1 and 64 slots", a.parallel)));
    }
    let session = a.ctx.session_config()?;
    let mut progress = PullProgress::new();
    let path = decache::pull::resolve_model(a.model.model.as_deref(), &mut |e| render_event(&mut progress, &e))?;
    progress.finish();
    let model_id = a.alias.clone().unwrap_or_else(|| {
        path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
    });
    let sampling = a.sampling.params();
    sampling.validate()?;
    let policy = a.decache.policy()?;
    let opts = ServerOptions {
        model_id,
        strict_model: a.strict_model,
        api_key: a.api_key.clone(),
        max_body: a.max_body_mb.max(1) << 20,
        sampling,
        auto_prune: !a.no_auto_prune,
        policy,
        keep_alive: std::time::Duration::from_secs_f64(a.sse_keep_alive),
        record_requests: match &a.record_requests {
            Some(d) => {
                std::fs::create_dir_all(d)
                    .map_err(|e| decache::Error::InvalidArgument(format!("--record-requests {}: {e}", d.display())))?;
                Some(d.clone())
            }
            None => None,
        },
        script: match &a.script {
            Some(p) => Some(Arc::new(std::sync::Mutex::new(decache::script::ReplyScript::from_file(p)?))),
            None => None,
        },
    };
    let state = AppState::new(opts);
    let engine_cfg = EngineConfig {
        session,
        slots: a.parallel,
        queue: a.queue,
        min_chunk: (!a.no_subconscious).then_some(a.subconscious_min),
        // (Resolved against the model's calibration once it is loaded.)
        refresh: a.decache.refresh.unwrap_or(0),
        positions,
        transcripts: a.transcripts.clone(),
        repack: a.model.load_options().extra_buffers,
        n_predict: (a.n_predict >= 0).then_some(a.n_predict as usize),
        cache_ram: a.cache_ram << 20,
        spec: a.sampling.spec()?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| decache::Error::System { what: "cannot start the async runtime".into(), source })?;
    rt.block_on(async {
        let addr = format!("{}:{}", a.host, a.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|source| decache::Error::System { what: format!("cannot listen on {addr}"), source })?;
        let bound = listener.local_addr().map(|a| a.to_string()).unwrap_or(addr);
        eprintln!("decache serve: listening on http://{bound} (loading {})", path.display());
        let (st, load_opts, tpl_file) = (state.clone(), a.model.load_options(), a.chat_template_file.clone());
        let decache_args = a.decache.clone();
        let mut engine_cfg = engine_cfg;
        let loader = tokio::task::spawn_blocking(move || -> Result<(), decache::Error> {
            let model = Arc::new(Model::load(&path, &load_opts)?);
            let resolved = decache_args.resolve(&model)?;
            (engine_cfg.positions, engine_cfg.refresh) = (resolved.positions, resolved.refresh);
            let template = chat_template(&model, tpl_file.as_ref())?;
            let engine = Engine::start(model, engine_cfg)?;
            eprintln!(
                "decache serve: ready: {} slot(s) of {} cells; subconscious cache {}",
                engine.config.slots,
                engine.n_ctx,
                engine.config.min_chunk.map_or("off".to_string(), |n| format!("on (chunks > {n} tokens)"))
            );
            st.set_ready(Arc::new(engine), template);
            Ok(())
        });
        let app = router(state);
        let server = axum::serve(listener, app).with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("decache serve: stopping");
        });
        // Loading runs beside the server; only its failure ends the server.
        let load_failed = async {
            match loader.await {
                Ok(Ok(())) => std::future::pending::<decache::Error>().await,
                Ok(Err(e)) => e,
                Err(e) => decache::Error::Internal(format!("model loader: {e}")),
            }
        };
        tokio::select! {
            r = server => r.map_err(|source| decache::Error::System { what: "server".into(), source }),
            e = load_failed => Err(e),
        }
    })
}

/// A number of seconds above zero and at most a day (clap value parser).
fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 86_400.0 => Ok(v),
        Ok(v) => Err(format!("{v} is not between 0 (excluded) and 86400 seconds")),
        Err(e) => Err(format!("{s:?} is not a number of seconds: {e}")),
    }
}
