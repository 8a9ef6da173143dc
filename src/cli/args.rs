//! Flag groups shared by several commands, spelled as llama.cpp spells them.
use clap::Args;
use decache::ggml::GgmlType;
use decache::model::{GpuLayers, LoadOptions};
use decache::sampling::SamplingParams;
use decache::session::speculate::{SpecMode, SpecParams};
use decache::session::{default_threads, SessionConfig};
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Model: a .gguf path, a known name (smollm2, gemma3-270m) or an https URL. Default: SmolLM2-135M-Instruct (pulled if missing).
    #[arg(short = 'm', long = "model")]
    pub model: Option<String>,
    /// Read the weights into memory instead of mapping the file.
    #[arg(long = "no-mmap")]
    pub no_mmap: bool,
    /// Keep weights in their file layout, no repacked/AMX buffers (also -nr).
    #[arg(long = "no-repack")]
    pub no_repack: bool,
    /// Layers to offload to the GPUs of this build and the --rpc servers: a count, 'all' or 'auto'
    /// (= all when there is a device). The output layer counts as the last one, as in llama.cpp (also -ngl).
    #[arg(long = "n-gpu-layers", default_value = "auto", value_parser = parse_gpu_layers)]
    pub gpu_layers: GpuLayers,
    /// RPC servers (`decache rpc-server` or llama.cpp's rpc-server) whose devices take layers: host:port[,host:port...].
    #[arg(long = "rpc", value_delimiter = ',')]
    pub rpc: Vec<String>,
    /// Each device's share of the offloaded layers, e.g. 3,1 (default: in proportion to free memory) (also -ts).
    #[arg(long = "tensor-split", value_delimiter = ',')]
    pub tensor_split: Vec<f32>,
}

fn parse_gpu_layers(s: &str) -> Result<GpuLayers, String> {
    GpuLayers::parse(s)
}

impl ModelArgs {
    /// Only the model's path or name (everything else at its default).
    pub fn path_only(model: Option<String>, no_mmap: bool) -> ModelArgs {
        ModelArgs {
            model,
            no_mmap,
            no_repack: false,
            gpu_layers: GpuLayers::Auto,
            rpc: Vec::new(),
            tensor_split: Vec::new(),
        }
    }

    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            no_mmap: self.no_mmap,
            extra_buffers: !self.no_repack,
            gpu_layers: self.gpu_layers,
            rpc: self.rpc.clone(),
            tensor_split: self.tensor_split.clone(),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ContextArgs {
    /// KV cache size in tokens (0 = the model's context, at most 4096).
    #[arg(short = 'c', long = "ctx-size", default_value_t = 0)]
    pub ctx_size: usize,
    /// Logical batch size.
    #[arg(short = 'b', long = "batch-size", default_value_t = 2048)]
    pub batch_size: usize,
    /// Physical (micro) batch size (also -ub).
    #[arg(long = "ubatch-size", default_value_t = 512)]
    pub ubatch_size: usize,
    /// Threads (default: all cores).
    #[arg(short = 't', long = "threads")]
    pub threads: Option<usize>,
    /// K cache type: f16, f32 or q8_0 (also -ctk).
    #[arg(long = "cache-type-k", default_value = "f16")]
    pub cache_type_k: String,
    /// V cache type: f16, f32 or q8_0 (also -ctv; q8_0 needs flash attention).
    #[arg(long = "cache-type-v", default_value = "f16")]
    pub cache_type_v: String,
    /// Flash attention: on, off or auto (also -fa; auto = on, as in llama.cpp: the fused op is the faster path on the CPU too).
    #[arg(long = "flash-attn", value_enum, default_value_t = FlashAttn::Auto)]
    pub flash_attn: FlashAttn,
    /// With flash attention, attend with ggml's fused op at every step (llama.cpp's kernel, its
    /// bits) instead of decache's own CPU kernels (query heads grouped on their K/V head: faster at depth).
    #[arg(long = "ggml-attention")]
    pub ggml_attention: bool,
    /// Multiply every weight with ggml's kernels instead of decache's products for Q4_1 and Q5_0
    /// weights (eight rows packed together at load: faster on the CPU, the same bits).
    #[arg(long = "ggml-matmul")]
    pub ggml_matmul: bool,
    /// Give sliding-window layers (Gemma 3) the full cache instead of one sized to their window:
    /// more memory, but closing gaps and resuming further back stay exact for them.
    #[arg(long = "swa-full")]
    pub swa_full: bool,
}

/// `-fa on|off|auto`, as llama.cpp spells it.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlashAttn {
    #[value(alias = "1")]
    On,
    #[value(alias = "0")]
    Off,
    Auto,
}

impl FlashAttn {
    pub fn enabled(self) -> bool {
        match self {
            FlashAttn::On => true,
            FlashAttn::Off => false,
            FlashAttn::Auto => decache::session::FLASH_ATTN_AUTO,
        }
    }
}

impl ContextArgs {
    pub fn session_config(&self) -> Result<SessionConfig, decache::Error> {
        let ty = |flag: &str, s: &str| {
            GgmlType::from_name(s).ok_or_else(|| {
                decache::Error::InvalidArgument(format!("{flag} {s}: unknown type (use f16, f32 or q8_0)"))
            })
        };
        if self.threads == Some(0) {
            return Err(decache::Error::InvalidArgument("-t 0: at least one thread is needed".into()));
        }
        Ok(SessionConfig {
            n_ctx: self.ctx_size,
            n_batch: self.batch_size,
            n_ubatch: self.ubatch_size,
            n_threads: self.threads.unwrap_or_else(default_threads),
            type_k: ty("-ctk", &self.cache_type_k)?,
            type_v: ty("-ctv", &self.cache_type_v)?,
            flash_attn: self.flash_attn.enabled(),
            ggml_attention: self.ggml_attention,
            ggml_matmul: self.ggml_matmul,
            swa_full: self.swa_full,
            n_seq: 1,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature (0 = greedy).
    #[arg(long = "temp", default_value_t = 0.8)]
    pub temp: f32,
    /// Top-k (0 = off).
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: i32,
    /// Top-p (1 = off).
    #[arg(long = "top-p", default_value_t = 0.95)]
    pub top_p: f32,
    /// Min-p (0 = off).
    #[arg(long = "min-p", default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty (1 = off).
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    pub repeat_penalty: f32,
    /// Tokens considered by the penalties (-1 = all).
    #[arg(long = "repeat-last-n", default_value_t = 64, allow_negative_numbers = true)]
    pub repeat_last_n: i32,
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    pub presence_penalty: f32,
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    pub frequency_penalty: f32,
    /// Random seed (-1 = random).
    #[arg(short = 's', long = "seed", default_value_t = -1, allow_negative_numbers = true)]
    pub seed: i64,
    /// Draft-free speculative decoding: off, on, or auto (on while drafts
    /// from the context's n-grams produce tokens faster than plain steps).
    /// Changes how many tokens one evaluation checks, not the text.
    #[arg(long = "spec", default_value = "off")]
    pub spec: String,
    /// Longest draft (llama.cpp's spelling; also --draft).
    #[arg(long = "draft-max", visible_alias = "draft", default_value_t = 64)]
    pub draft_max: usize,
    /// Tokens that must repeat earlier context before what followed them is drafted.
    #[arg(long = "spec-ngram-size-n", default_value_t = 3)]
    pub spec_ngram: usize,
}

impl SamplingArgs {
    /// The speculation settings, checked.
    pub fn spec(&self) -> Result<SpecParams, decache::Error> {
        let mode = SpecMode::from_name(&self.spec)
            .ok_or_else(|| decache::Error::InvalidArgument(format!("--spec {}: use off, on or auto", self.spec)))?;
        if self.spec_ngram == 0 {
            return Err(decache::Error::InvalidArgument("--spec-ngram-size-n 0: at least one token must match".into()));
        }
        if self.draft_max == 0 && mode != SpecMode::Off {
            return Err(decache::Error::InvalidArgument("--draft-max 0: use --spec off to draft nothing".into()));
        }
        Ok(SpecParams { mode, draft_max: self.draft_max, ngram: self.spec_ngram })
    }

    pub fn params(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            seed: if self.seed < 0 { decache::sampling::RANDOM_SEED } else { self.seed as u64 },
            ..SamplingParams::default()
        }
    }
}

/// Text given inline (`-p`) or in a file (`-f`).
#[derive(Args, Debug, Clone)]
pub struct TextArgs {
    /// The text (prompt).
    #[arg(short = 'p', long = "prompt", conflicts_with = "file")]
    pub prompt: Option<String>,
    /// Read the text from a file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
}

impl TextArgs {
    /// The text, or an error naming what is missing or wrong.
    pub fn text(&self) -> Result<String, decache::Error> {
        match (&self.prompt, &self.file) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(f)) => read_prompt_arg(f),
            (None, None) => Err(decache::Error::InvalidArgument("no prompt: give -p TEXT or -f FILE".into())),
        }
    }
}

/// The text of a prompt given as `-f FILE`: the file without one trailing
/// newline, as llama.cpp's tools read it (an editor ends every file with one;
/// the same file must give the same tokens to both).
pub fn read_prompt_arg(path: &PathBuf) -> Result<String, decache::Error> {
    let mut text = read_prompt_file(path)?;
    if text.ends_with('\n') {
        text.pop();
    }
    Ok(text)
}

/// A file's text, or an error naming the file and the problem.
pub fn read_prompt_file(path: &PathBuf) -> Result<String, decache::Error> {
    let bytes = std::fs::read(path).map_err(|source| decache::Error::Io { path: path.clone(), source })?;
    String::from_utf8(bytes).map_err(|e| {
        decache::Error::InvalidArgument(format!(
            "{}: not valid UTF-8 (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// When and how context is forgotten (`chat`, `agent`, `serve`).
#[derive(Args, Debug, Clone)]
pub struct DecacheArgs {
    /// Start forgetting when live cells (for `serve`: a request) reach this percentage of the cache.
    #[arg(long = "decache-at", default_value_t = 90.0)]
    pub decache_at: f32,
    /// Forget down to this percentage.
    #[arg(long = "decache-to", default_value_t = 70.0)]
    pub decache_to: f32,
    /// Position policy after forgetting: keep, shift or auto.
    #[arg(long = "positions", default_value = "auto")]
    pub positions: String,
    /// Boundary refresh: after forgetting, evaluate the first N kept tokens
    /// after each forgotten span again, without it (0: off; see `decache eval --refresh`).
    /// Default: what the model's calibration chose under `--positions auto`, else 0.
    #[arg(long = "refresh", value_name = "N")]
    pub refresh: Option<usize>,
}

impl DecacheArgs {
    /// The policy the flags give (checked: 0 < to < at <= 100).
    pub fn policy(&self) -> Result<decache::context::policy::DecachePolicy, decache::Error> {
        if !(0.0 < self.decache_to && self.decache_to < self.decache_at && self.decache_at <= 100.0) {
            return Err(decache::Error::InvalidArgument(format!(
                "--decache-to {} and --decache-at {}: need 0 < to < at <= 100",
                self.decache_to, self.decache_at
            )));
        }
        Ok(decache::context::policy::DecachePolicy {
            at: self.decache_at / 100.0,
            to: self.decache_to / 100.0,
            ..Default::default()
        })
    }

    pub fn positions(&self) -> Result<decache::session::PositionPolicy, decache::Error> {
        self.positions.parse().map_err(decache::Error::InvalidArgument)
    }

    /// The position policy and refresh for this model: `--refresh` checked
    /// (a hybrid model's recurrent state cannot take kept tokens a second
    /// time), and `--positions auto` resolved through the model file's
    /// calibration (`decache eval --calibrate`). Prints what auto chose.
    pub fn resolve(&self, model: &decache::model::Model) -> Result<decache::eval::calibrate::Resolved, decache::Error> {
        let hybrid = model.hparams.recurrent.is_some();
        if let Some(n) = self.refresh.filter(|&n| n > 0 && hybrid) {
            return Err(decache::Error::InvalidArgument(format!(
                "--refresh {n}: boundary refresh is not available for hybrid models ({}): their recurrent layers \
                 absorb each token once, in order",
                model.hparams.arch
            )));
        }
        let r = decache::eval::calibrate::resolve(&model.info.fingerprint, hybrid, self.positions()?, self.refresh)
            .map_err(decache::Error::InvalidArgument)?;
        if let Some((c, path)) = &r.from {
            let from = path.display();
            eprintln!(
                "--positions auto: {} with {} (this model's calibration, {from}: {} sets)",
                c.choice.positions.name(),
                if r.refresh > 0 { format!("a refresh of {} tokens per gap", r.refresh) } else { "no refresh".into() },
                c.sets.len()
            );
        }
        Ok(r)
    }
}
