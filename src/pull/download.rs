//! Resumable, verified HTTP downloads.
//!
//! Bytes stream into `<cache>/.partial/<name>.part`. When that file already
//! exists the request asks only for the rest (`Range: bytes=N-`); a server that
//! ignores the range (plain 200) or answers with a range that does not fit
//! makes the download start over. A complete part file is checked (size,
//! SHA-256, optionally the GGUF magic) and only then renamed onto the final
//! path, so the final path never holds a partial or unverified file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ureq::Agent;

use super::cache::{file_len, place, remove_if_exists};
use super::error::{PullError, Result};
use super::events::PullEvent;
use super::verify::{check_digest, check_gguf_magic, sha256_file};

/// Progress is reported every this many bytes.
const PROGRESS_STEP: u64 = 256 << 10;

/// One file to fetch.
#[derive(Debug, Clone)]
pub(crate) struct Target<'a> {
    /// Where the bytes come from.
    pub url: &'a str,
    /// Final path; its file name also names the part file.
    pub dest: &'a Path,
    /// Expected size, when known.
    pub size: Option<u64>,
    /// Expected SHA-256 (hex), when known.
    pub sha256: Option<&'a str>,
    /// Whether the file must start with the GGUF magic.
    pub gguf: bool,
}

impl Target<'_> {
    fn name(&self) -> String {
        file_name_of(self.dest)
    }
}

/// The file name of `path` as text (lossy), for messages.
pub(crate) fn file_name_of(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

/// The part file used for `dest` under the partial directory.
pub(crate) fn part_path(partial: &Path, dest: &Path) -> PathBuf {
    partial.join(format!("{}.part", file_name_of(dest)))
}

/// Downloads `target` through its part file in `partial`, retrying interrupted
/// transfers up to `retries` times (each retry resumes), verifies it and
/// renames it onto `target.dest`. Returns the file's size.
pub(crate) fn download(
    agent: &Agent,
    partial: &Path,
    target: &Target,
    retries: u32,
    on_event: &mut dyn FnMut(PullEvent),
) -> Result<u64> {
    let part = part_path(partial, target.dest);
    let mut attempt = 0;
    loop {
        match fetch_into_part(agent, &part, target, on_event) {
            Ok(()) => break,
            Err(e) if attempt < retries && is_transient(&e) => {
                attempt += 1;
                on_event(PullEvent::Retrying { name: target.name(), attempt, reason: e.to_string() });
                std::thread::sleep(Duration::from_millis(250 * u64::from(attempt)));
            }
            Err(e) => return Err(e),
        }
    }
    finish_part(&part, target, on_event)
}

/// Whether a failed transfer is worth resuming: a cut connection, a failed
/// request, or a server-side error status.
fn is_transient(e: &PullError) -> bool {
    match e {
        PullError::Interrupted { .. } | PullError::Http { .. } => true,
        PullError::HttpStatus { status, .. } => *status >= 500,
        _ => false,
    }
}

/// Checks a complete part file and moves it into place; a file that fails a
/// check is deleted.
fn finish_part(part: &Path, target: &Target, on_event: &mut dyn FnMut(PullEvent)) -> Result<u64> {
    let what = target.url;
    let len = file_len(part)?.unwrap_or(0);
    if let Some(size) = target.size {
        if len != size {
            remove_if_exists(part)?;
            return Err(PullError::SizeMismatch { what: what.to_string(), expected: size, actual: len });
        }
    }
    if let Some(expected) = target.sha256 {
        on_event(PullEvent::Verifying { name: target.name() });
        let (actual, _) = sha256_file(part)?;
        if let Err(e) = check_digest(what, expected, &actual) {
            remove_if_exists(part)?;
            return Err(e);
        }
    }
    if target.gguf && check_gguf_magic(part).is_err() {
        remove_if_exists(part)?;
        return Err(PullError::NotGguf { path: target.dest.to_path_buf() });
    }
    place(part, target.dest)?;
    Ok(len)
}

/// What one HTTP exchange achieved.
enum Outcome {
    /// The part file now holds the whole body.
    Complete,
    /// The partial data cannot be continued; delete it and start over.
    StartOver(String),
}

/// Brings the part file to completion (resuming it when present), starting
/// over at most once.
fn fetch_into_part(agent: &Agent, part: &Path, target: &Target, on_event: &mut dyn FnMut(PullEvent)) -> Result<()> {
    for _ in 0..2 {
        match exchange(agent, part, target, on_event)? {
            Outcome::Complete => return Ok(()),
            Outcome::StartOver(reason) => {
                remove_if_exists(part)?;
                on_event(PullEvent::Restarting { name: target.name(), reason });
            }
        }
    }
    Err(PullError::Interrupted {
        url: target.url.to_string(),
        done: 0,
        total: target.size,
        reason: "the server's answers to range requests do not fit the partial file".into(),
    })
}

/// One request: ranged when a part file exists, appending to it on 206.
fn exchange(agent: &Agent, part: &Path, target: &Target, on_event: &mut dyn FnMut(PullEvent)) -> Result<Outcome> {
    let url = target.url;
    let name = target.name();
    let mut have = file_len(part)?.unwrap_or(0);
    if let Some(size) = target.size {
        if have == size {
            return Ok(Outcome::Complete);
        }
        if have > size {
            remove_if_exists(part)?;
            have = 0;
        }
    }
    let mut request = agent.get(url);
    if have > 0 {
        on_event(PullEvent::Resuming { name: name.clone(), from: have });
        request = request.header("Range", format!("bytes={have}-"));
    }
    let mut resp = request.call().map_err(|e| PullError::Http { url: url.to_string(), source: Box::new(e) })?;
    let status = resp.status().as_u16();
    let header = |h: &str| resp.headers().get(h).and_then(|v| v.to_str().ok()).map(str::to_string);
    let content_length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
    let content_range = header("content-range").and_then(|v| parse_content_range(&v));

    let (append, total) = match status {
        206 if have > 0 => match content_range {
            Some(cr) if cr.start == Some(have) => (true, cr.total.or(content_length.map(|n| n + have)).or(target.size)),
            _ => {
                return Ok(Outcome::StartOver(
                    "the server answered with a range that does not continue the partial file".into(),
                ))
            }
        },
        200 => {
            if have > 0 {
                on_event(PullEvent::Restarting {
                    name: name.clone(),
                    reason: "the server ignored the Range request".into(),
                });
            }
            (false, content_length.or(target.size))
        }
        416 if have > 0 => {
            return Ok(match content_range.and_then(|cr| cr.total) {
                Some(total) if total == have => Outcome::Complete,
                _ => Outcome::StartOver("the server cannot continue the partial file (HTTP 416)".into()),
            })
        }
        _ => return Err(PullError::HttpStatus { url: url.to_string(), status }),
    };

    let mut file = if append { OpenOptions::new().append(true).open(part) } else { File::create(part) }
        .map_err(|e| PullError::io(part, e))?;
    let mut done = if append { have } else { 0 };
    on_event(PullEvent::Downloading { name: name.clone(), done, total });

    let mut reader = resp.body_mut().as_reader();
    let mut buf = vec![0u8; 1 << 16];
    let mut next_report = done + PROGRESS_STEP;
    let read_error = loop {
        match reader.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => {
                file.write_all(&buf[..n]).map_err(|e| PullError::io(part, e))?;
                done += n as u64;
                if done >= next_report {
                    next_report = done + PROGRESS_STEP;
                    on_event(PullEvent::Downloading { name: name.clone(), done, total });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Some(e.to_string()),
        }
    };
    file.flush().map_err(|e| PullError::io(part, e))?;
    drop(file);
    on_event(PullEvent::Downloading { name: name.clone(), done, total });
    let short = total.is_some_and(|t| done < t);
    if read_error.is_some() || short {
        return Err(PullError::Interrupted {
            url: url.to_string(),
            done,
            total,
            reason: read_error.unwrap_or_else(|| "the connection closed before the end of the body".into()),
        });
    }
    Ok(Outcome::Complete)
}

/// A parsed `Content-Range: bytes START-END/TOTAL` (or `bytes */TOTAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ContentRange {
    start: Option<u64>,
    total: Option<u64>,
}

/// Parses a `Content-Range` value; `None` when it is not a byte range.
fn parse_content_range(value: &str) -> Option<ContentRange> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = total.trim().parse::<u64>().ok();
    let start = if range.trim() == "*" { None } else { Some(range.split_once('-')?.0.trim().parse::<u64>().ok()?) };
    Some(ContentRange { start, total })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(parse_content_range("bytes 100-199/200"), Some(ContentRange { start: Some(100), total: Some(200) }));
        assert_eq!(parse_content_range("bytes 5-9/*"), Some(ContentRange { start: Some(5), total: None }));
        assert_eq!(parse_content_range("bytes */42"), Some(ContentRange { start: None, total: Some(42) }));
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range("bytes x-2/3"), None);
    }
}
