//! The file tools: read, list, glob, grep, write and edit, inside the
//! project folder only.
use super::tools::{arg_str, opt_str, opt_u64, Limits, ToolError, ToolOutput};
use super::workspace::Workspace;
use crate::context::segments::SegmentKind;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Directories no search walks into.
const SKIP_DIRS: &[&str] = &[".git", "target", "node_modules", ".decache"];

/// Largest file grep looks into.
const GREP_MAX_FILE: u64 = 4 << 20;

/// Whether the first bytes of a file say it is binary (a NUL byte, or not UTF-8).
fn looks_binary(head: &[u8]) -> bool {
    if head.contains(&0) {
        return true;
    }
    match std::str::from_utf8(head) {
        Ok(_) => false,
        // A multi-byte character cut at the end of the sample is fine.
        Err(e) => e.error_len().is_some(),
    }
}

fn head_of(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0; 8192];
    let n = f.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// Refuse what is not a plain file of the folder's own: a FIFO, socket or
/// device (opening one can block forever), or a file with more than one hard
/// link (another name for it may lie outside the folder, where no path check
/// can see it).
fn check_plain(meta: &std::fs::Metadata, shown: &str) -> Result<(), ToolError> {
    if !meta.is_file() {
        return Err(
            format!("{shown} is not a regular file (a FIFO, socket or device); it is not read or written").into()
        );
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if meta.nlink() > 1 {
            return Err(format!(
                "{shown} has {} hard links; another may lie outside the project folder, so it is not read or written",
                meta.nlink()
            )
            .into());
        }
    }
    Ok(())
}

fn io_error(shown: &str, e: std::io::Error) -> ToolError {
    match e.kind() {
        std::io::ErrorKind::NotFound => format!("{shown}: no such file or directory").into(),
        std::io::ErrorKind::PermissionDenied => format!("{shown}: permission denied").into(),
        _ => format!("{shown}: {e}").into(),
    }
}

pub fn read_file(ws: &Workspace, limits: &Limits, a: &Value) -> Result<ToolOutput, ToolError> {
    let given = arg_str(a, "path")?;
    let path = ws.resolve(given)?;
    let shown = ws.show(&path);
    let meta = std::fs::metadata(&path).map_err(|e| io_error(&shown, e))?;
    if meta.is_dir() {
        return Err(format!("{shown} is a directory, not a file; use list_dir to see what it holds").into());
    }
    check_plain(&meta, &shown)?;
    let (start, end) = (opt_u64(a, "start_line")?, opt_u64(a, "end_line")?);
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            return Err(format!("end_line {e} is before start_line {s}").into());
        }
    }
    let head = head_of(&path).map_err(|e| io_error(&shown, e))?;
    if looks_binary(&head) {
        return Err(format!("{shown} is a binary file ({} bytes); it cannot be shown as text", meta.len()).into());
    }
    let ranged = start.is_some() || end.is_some();
    if !ranged && meta.len() > limits.max_read_bytes {
        return Err(format!(
            "{shown} is {} bytes, more than the {} a read may hold; read a part of it with start_line and end_line",
            meta.len(),
            limits.max_read_bytes
        )
        .into());
    }
    let file = std::fs::File::open(&path).map_err(|e| io_error(&shown, e))?;
    let (s, e) = (start.unwrap_or(1).max(1), end.unwrap_or(u64::MAX));
    let mut text = String::new();
    let mut total = 0u64;
    for line in BufReader::new(file).split(b'\n') {
        let line = line.map_err(|e| io_error(&shown, e))?;
        total += 1;
        if total >= s && total <= e && text.len() < limits.max_read_bytes as usize {
            text.push_str(&String::from_utf8_lossy(&line));
            text.push('\n');
        }
    }
    if ranged && s > total.max(1) {
        return Err(format!("{shown} has {total} lines; start_line {s} is past the end").into());
    }
    let header = if ranged { format!("{shown} lines {s}-{} of {total}:", e.min(total)) } else { format!("{shown}:") };
    Ok(ToolOutput {
        summary: format!("{shown}: {} lines", if ranged { e.min(total) + 1 - s } else { total }),
        text: format!("{header}\n{text}"),
        kind: SegmentKind::FileRead { path: shown },
        wrote: None,
    })
}

pub fn list_dir(ws: &Workspace, limits: &Limits, a: &Value) -> Result<ToolOutput, ToolError> {
    let given = opt_str(a, "path")?.unwrap_or(".");
    let path = ws.resolve(given)?;
    let shown = ws.show(&path);
    let meta = std::fs::metadata(&path).map_err(|e| io_error(&shown, e))?;
    if !meta.is_dir() {
        return Err(format!("{shown} is a file, not a directory; use read_file to read it").into());
    }
    let mut names: Vec<String> = std::fs::read_dir(&path)
        .map_err(|e| io_error(&shown, e))?
        .filter_map(Result::ok)
        .map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                format!("{n}/")
            } else {
                n
            }
        })
        .collect();
    names.sort();
    let n = names.len();
    names.truncate(limits.max_entries);
    let more = if n > names.len() { format!("\n[… {} more entries]", n - names.len()) } else { String::new() };
    Ok(ToolOutput {
        text: format!("{shown}/:\n{}{more}", names.join("\n")),
        kind: SegmentKind::SearchResult,
        summary: format!("{shown}: {n} entries"),
        wrote: None,
    })
}

/// The files under `dir` (not following symlinks, skipping build and VCS folders).
fn walk(dir: &Path) -> impl Iterator<Item = walkdir::DirEntry> {
    walkdir::WalkDir::new(dir)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            !(e.file_type().is_dir() && e.depth() > 0 && SKIP_DIRS.contains(&e.file_name().to_string_lossy().as_ref()))
        })
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
}

fn matcher(pattern: &str) -> Result<globset::GlobMatcher, ToolError> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("bad glob pattern {pattern:?}: {e}").into())
}

pub fn glob(ws: &Workspace, limits: &Limits, a: &Value) -> Result<ToolOutput, ToolError> {
    let pattern = arg_str(a, "pattern")?;
    let m = matcher(pattern)?;
    let mut found = Vec::new();
    let mut n = 0;
    for e in walk(ws.root()) {
        let rel = ws.show(e.path());
        if m.is_match(&rel) {
            n += 1;
            if found.len() < limits.max_entries {
                found.push(rel);
            }
        }
    }
    let more = if n > found.len() { format!("\n[… {} more files]", n - found.len()) } else { String::new() };
    let body = if found.is_empty() { "no files match".to_string() } else { found.join("\n") };
    Ok(ToolOutput {
        text: format!("files matching {pattern}:\n{body}{more}"),
        kind: SegmentKind::SearchResult,
        summary: format!("{n} files"),
        wrote: None,
    })
}

pub fn grep(ws: &Workspace, limits: &Limits, a: &Value) -> Result<ToolOutput, ToolError> {
    let pattern = arg_str(a, "pattern")?;
    let re = regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("bad regular expression {pattern:?}: {e}"))?;
    let root = ws.resolve(opt_str(a, "path")?.unwrap_or("."))?;
    let filter = opt_str(a, "glob")?.map(matcher).transpose()?;
    if !root.exists() {
        return Err(format!("{}: no such file or directory", ws.show(&root)).into());
    }
    let files: Vec<std::path::PathBuf> =
        if root.is_file() { vec![root.clone()] } else { walk(&root).map(|e| e.into_path()).collect() };
    let mut hits = Vec::new();
    let mut n = 0;
    for f in files {
        let rel = ws.show(&f);
        if filter.as_ref().is_some_and(|m| !m.is_match(&rel)) {
            continue;
        }
        let plain = |m: &std::fs::Metadata| m.len() <= GREP_MAX_FILE && check_plain(m, &rel).is_ok();
        if !std::fs::metadata(&f).is_ok_and(|m| plain(&m)) || head_of(&f).map_or(true, |h| looks_binary(&h)) {
            continue;
        }
        let Ok(text) = std::fs::read(&f) else { continue };
        let text = String::from_utf8_lossy(&text);
        for (i, line) in text.lines().enumerate() {
            if re.is_match(line) {
                n += 1;
                if hits.len() < limits.max_entries {
                    let line: String = line.chars().take(300).collect();
                    hits.push(format!("{rel}:{}: {line}", i + 1));
                }
            }
        }
    }
    let more = if n > hits.len() { format!("\n[… {} more matches]", n - hits.len()) } else { String::new() };
    let body = if hits.is_empty() { "no matches".to_string() } else { hits.join("\n") };
    Ok(ToolOutput {
        text: format!("matches of /{pattern}/:\n{body}{more}"),
        kind: SegmentKind::SearchResult,
        summary: format!("{n} matches"),
        wrote: None,
    })
}

/// Writes `bytes` to a temporary file beside `path` and renames it over
/// `path`, keeping the old file's permissions: a crash mid-write leaves the
/// old content or the new, never half of it.
fn write_replacing(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.decache-{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut f, bytes)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub fn write_file(ws: &Workspace, a: &Value) -> Result<ToolOutput, ToolError> {
    let path = ws.resolve(arg_str(a, "path")?)?;
    let content = arg_str(a, "content")?;
    let shown = ws.show(&path);
    if path.is_dir() {
        return Err(format!("{shown} is a directory; give a file path").into());
    }
    if let Ok(meta) = std::fs::metadata(&path) {
        check_plain(&meta, &shown)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io_error(&ws.show(dir), e))?;
    }
    write_replacing(&path, content.as_bytes()).map_err(|e| io_error(&shown, e))?;
    Ok(ToolOutput {
        text: format!("wrote {} bytes ({} lines) to {shown}", content.len(), content.lines().count()),
        kind: SegmentKind::CommandOutput { passed: Some(true) },
        summary: format!("{shown}: {} bytes", content.len()),
        wrote: Some(path),
    })
}

pub fn edit_file(ws: &Workspace, a: &Value) -> Result<ToolOutput, ToolError> {
    let path = ws.resolve(arg_str(a, "path")?)?;
    let (old, new) = (arg_str(a, "old_string")?, arg_str(a, "new_string")?);
    let all = a.get("replace_all").and_then(Value::as_bool).unwrap_or(false);
    let shown = ws.show(&path);
    if path.is_dir() {
        return Err(format!("{shown} is a directory, not a file").into());
    }
    check_plain(&std::fs::metadata(&path).map_err(|e| io_error(&shown, e))?, &shown)?;
    if old.is_empty() {
        return Err("old_string is empty; give the exact text to replace (write_file creates a file)".into());
    }
    let bytes = std::fs::read(&path).map_err(|e| io_error(&shown, e))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("{shown} is not UTF-8 text; it cannot be edited"))?;
    let n = text.matches(old).count();
    if n == 0 {
        return Err(format!("old_string was not found in {shown}; read the file and copy the text exactly").into());
    }
    if n > 1 && !all {
        return Err(format!(
            "old_string occurs {n} times in {shown}; give more context to make it unique, or set replace_all"
        )
        .into());
    }
    let out = if all { text.replace(old, new) } else { text.replacen(old, new, 1) };
    write_replacing(&path, out.as_bytes()).map_err(|e| io_error(&shown, e))?;
    Ok(ToolOutput {
        text: format!(
            "replaced {} occurrence{} in {shown}",
            if all { n } else { 1 },
            if all && n > 1 { "s" } else { "" }
        ),
        kind: SegmentKind::CommandOutput { passed: Some(true) },
        summary: format!("{shown}: {} replaced", if all { n } else { 1 }),
        wrote: Some(path),
    })
}
