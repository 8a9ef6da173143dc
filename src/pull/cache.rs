//! The model cache directory: where models live, where partial downloads wait,
//! how files are placed atomically, and the per-file lock that keeps two
//! processes from writing the same partial file.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::error::{PullError, Result};

/// Environment variable that overrides the cache directory.
pub const CACHE_DIR_ENV: &str = "DECACHE_CACHE_DIR";

/// Name of the sub-directory holding partial downloads and temporary files.
pub const PARTIAL_DIR: &str = ".partial";

/// The model cache: `$DECACHE_CACHE_DIR` if set, else `<XDG cache>/decache/models`
/// (`~/.cache/decache/models` on Linux). The directory is created on demand;
/// a failure to create it surfaces later, when a pull writes into it.
pub fn cache_dir() -> PathBuf {
    let dir = match std::env::var_os(CACHE_DIR_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("decache").join("models"),
    };
    let _ = fs::create_dir_all(&dir);
    dir
}

/// Creates `dir` (and its parents) or reports where it failed.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| PullError::io(dir, e))
}

/// `<cache>/.partial`, created if needed.
pub(crate) fn partial_dir(cache: &Path) -> Result<PathBuf> {
    let dir = cache.join(PARTIAL_DIR);
    ensure_dir(&dir)?;
    Ok(dir)
}

/// Size of a file, or `None` when it does not exist.
pub(crate) fn file_len(path: &Path) -> Result<Option<u64>> {
    match fs::metadata(path) {
        Ok(m) => Ok(Some(m.len())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PullError::io(path, e)),
    }
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PullError::io(path, e)),
    }
}

/// Syncs `tmp` to disk and renames it onto `dest` (same file system, so atomic).
pub(crate) fn place(tmp: &Path, dest: &Path) -> Result<()> {
    File::open(tmp).and_then(|f| f.sync_all()).map_err(|e| PullError::io(tmp, e))?;
    fs::rename(tmp, dest).map_err(|e| PullError::io(dest, e))
}

/// An exclusive advisory lock on `<partial dir>/<name>.lock`, released on drop
/// (and by the OS if the process dies).
pub(crate) struct PullLock {
    _file: File,
}

impl PullLock {
    /// Takes the lock for the output `name`, or fails with [`PullError::Busy`].
    pub(crate) fn acquire(partial: &Path, name: &str) -> Result<Self> {
        let path = partial.join(format!("{name}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| PullError::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => Ok(PullLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(PullError::Busy { path }),
            Err(TryLockError::Error(e)) => Err(PullError::io(&path, e)),
        }
    }
}

/// A model file found in the cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// Full path of the file.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// Name of the known model stored under this file name, if any.
    pub known: Option<String>,
}

/// The `.gguf` files directly inside `cache`, sorted by name. A missing or
/// unreadable directory yields an empty list.
pub fn cached_models(cache: &Path) -> Vec<CachedModel> {
    let known = super::known::known_models();
    let Ok(entries) = fs::read_dir(cache) else {
        return Vec::new();
    };
    let mut out: Vec<CachedModel> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            let name = e.file_name().to_str()?.to_string();
            if !meta.is_file() || !name.ends_with(".gguf") {
                return None;
            }
            Some(CachedModel {
                path: e.path(),
                bytes: meta.len(),
                known: known.iter().find(|k| k.file_name == name).map(|k| k.name.clone()),
            })
        })
        .collect();
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}
