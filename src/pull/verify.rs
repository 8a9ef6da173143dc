//! Integrity checks: SHA-256 digests and the GGUF magic.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::error::{PullError, Result};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: &[u8; 4] = b"GGUF";

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that `value` is a SHA-256 in hex and returns it in lower case.
pub fn normalize_sha256(value: &str) -> Result<String> {
    let v = value.trim().to_ascii_lowercase();
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(v)
    } else {
        Err(PullError::BadSha256 { value: value.to_string() })
    }
}

/// Feeds the first `limit` bytes of `path` (all of it when `None`) into `hasher`.
pub(crate) fn hash_file_into(path: &Path, hasher: &mut Sha256, limit: Option<u64>) -> Result<u64> {
    let file = File::open(path).map_err(|e| PullError::io(path, e))?;
    let mut reader = file.take(limit.unwrap_or(u64::MAX));
    let mut buf = vec![0u8; 1 << 16];
    let mut n_total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| PullError::io(path, e))?;
        if n == 0 {
            return Ok(n_total);
        }
        hasher.update(&buf[..n]);
        n_total += n as u64;
    }
}

/// SHA-256 (hex) and size of a whole file.
pub fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let n = hash_file_into(path, &mut hasher, None)?;
    Ok((hex(&hasher.finalize()), n))
}

/// Whether `path` starts with the GGUF magic. A file too short to hold it is not GGUF.
pub fn has_gguf_magic(path: &Path) -> Result<bool> {
    let mut file = File::open(path).map_err(|e| PullError::io(path, e))?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match file.read(&mut magic[got..]) {
            Ok(0) => return Ok(false),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PullError::io(path, e)),
        }
    }
    Ok(&magic == GGUF_MAGIC)
}

/// Fails with [`PullError::NotGguf`] unless `path` starts with the GGUF magic.
pub fn check_gguf_magic(path: &Path) -> Result<()> {
    if has_gguf_magic(path)? {
        Ok(())
    } else {
        Err(PullError::NotGguf { path: path.to_path_buf() })
    }
}

/// Compares a computed digest with the expected one (both hex).
pub(crate) fn check_digest(what: &str, expected: &str, actual: &str) -> Result<()> {
    if expected.eq_ignore_ascii_case(actual) {
        Ok(())
    } else {
        Err(PullError::ChecksumMismatch {
            what: what.to_string(),
            expected: expected.to_ascii_lowercase(),
            actual: actual.to_string(),
        })
    }
}

/// A writer that hashes and counts everything written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), written: 0 }
    }

    /// Returns the inner writer, the hex digest and the byte count.
    pub(crate) fn finish(self) -> (W, String, u64) {
        (self.inner, hex(&self.hasher.finalize()), self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
