//! Transcripts: a session's ops as JSON lines (format in
//! `docs/transcript.md`), written append-only and flushed per line, so a
//! crash loses at most the line being written; read back with each line
//! checked, a torn last line detected and left out, and replayed
//! (`replay.rs`) to rebuild the same cache and check every generated token.
pub mod replay;

use crate::kv::Pos;
use crate::sampling::SamplingParams;
use crate::session::record::{Recorder, SessionOp};
use crate::session::{Gap, StopReason};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub const VERSION: u32 = 1;

/// What a replay needs to rebuild the session: the model and the settings
/// that decide the numbers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub version: u32,
    /// The command that wrote it (`run`, `chat`, `agent`).
    pub command: String,
    pub model: String,
    /// The model file's identity (`GgufFile::fingerprint`).
    pub fingerprint: String,
    pub n_ctx: usize,
    pub n_batch: usize,
    pub n_ubatch: usize,
    pub n_threads: usize,
    pub type_k: String,
    pub type_v: String,
    /// Weights in repacked (AMX/interleaved) layouts.
    pub repack: bool,
    /// Flash attention (absent in transcripts written before it existed: off).
    #[serde(default)]
    pub flash_attn: bool,
    /// With flash attention, ggml's fused op at every step rather than
    /// decache's decoding kernel (absent in transcripts written before that
    /// kernel existed: they attended with ggml's op).
    #[serde(default = "ggml_by_default")]
    pub ggml_attention: bool,
    /// Sliding-window layers in the full cache (absent in transcripts
    /// written before they had a pool of their own: they had the full one).
    #[serde(default = "full_by_default")]
    pub swa_full: bool,
}

fn full_by_default() -> bool {
    true
}

fn ggml_by_default() -> bool {
    true
}

/// One entry of a transcript, as read back.
#[derive(Clone, Debug, PartialEq)]
pub enum Entry {
    Eval {
        tokens: Vec<u32>,
        positions: Vec<Pos>,
    },
    Remove {
        p0: Pos,
        p1: Pos,
        gap: Gap,
    },
    OpenGap {
        p0: Pos,
        n: Pos,
    },
    Defrag,
    CloseGaps,
    Clear,
    Rewind(Pos),
    /// The cache was saved under a tag (see [`Entry::Restore`]).
    Saved(u64),
    /// A saved state was loaded: one saved under this tag earlier in the
    /// transcript, or (no tag) one from elsewhere, which a replay cannot rebuild.
    Restore(Option<u64>),
    /// A generation with its tokens; `end` is `None` when the transcript
    /// stops inside it (the writer was killed).
    Generate {
        prompt: Vec<u32>,
        sampling: SamplingParams,
        n_predict: Option<usize>,
        ignore_eos: bool,
        /// The tokens were scripted (`serve --script`), not sampled.
        forced: bool,
        tokens: Vec<u32>,
        end: Option<(StopReason, bool)>,
    },
    /// What a conversation said about its context (segments, decache
    /// events with reasons); not needed to replay.
    Note(Value),
}

/// A transcript read back.
#[derive(Clone, Debug)]
pub struct Transcript {
    pub header: Header,
    /// Entries with the line each starts on (1-based).
    pub entries: Vec<(usize, Entry)>,
    /// The last line was cut short (and left out).
    pub torn: bool,
}

fn stop_name(s: StopReason) -> &'static str {
    match s {
        StopReason::EndOfGeneration => "eog",
        StopReason::Length => "length",
        StopReason::ContextFull => "context_full",
        StopReason::Cancelled => "cancelled",
    }
}

fn stop_of(s: &str) -> Option<StopReason> {
    Some(match s {
        "eog" => StopReason::EndOfGeneration,
        "length" => StopReason::Length,
        "context_full" => StopReason::ContextFull,
        "cancelled" => StopReason::Cancelled,
        _ => return None,
    })
}

/// Positions as JSON: `pos0` when they run on from it, else the list.
fn positions_json(v: &mut Value, positions: &[Pos]) {
    let contiguous = positions.windows(2).all(|w| w[1] == w[0] + 1);
    match (contiguous, positions.first()) {
        (true, Some(&p)) => v["pos0"] = json!(p),
        _ => v["positions"] = json!(positions),
    }
}

/// The JSON line of an op.
pub fn op_json(op: &SessionOp<'_>) -> Value {
    match op {
        SessionOp::Eval { tokens, positions } => {
            let mut v = json!({"type": "eval", "tokens": tokens});
            positions_json(&mut v, positions);
            v
        }
        SessionOp::Remove { p0, p1, gap } => json!({"type": "remove", "p0": p0, "p1": p1, "policy": gap}),
        SessionOp::OpenGap { p0, n } => json!({"type": "open_gap", "p0": p0, "n": n}),
        SessionOp::Defrag => json!({"type": "defrag"}),
        SessionOp::CloseGaps => json!({"type": "close_gaps"}),
        SessionOp::Clear => json!({"type": "clear"}),
        SessionOp::Rewind { next_pos } => json!({"type": "rewind", "next_pos": next_pos}),
        SessionOp::Saved { tag } => json!({"type": "saved", "tag": tag}),
        SessionOp::Restore { tag: None } => json!({"type": "restore"}),
        SessionOp::Restore { tag: Some(t) } => json!({"type": "restore", "tag": t}),
        SessionOp::GenerateStart { prompt, sampling, n_predict, ignore_eos, forced } => {
            let mut v = json!({"type": "generate", "prompt": prompt, "sampling": sampling, "n_predict": n_predict, "ignore_eos": ignore_eos});
            if *forced {
                v["forced"] = json!(true);
            }
            v
        }
        SessionOp::Token { id } => json!({"type": "token", "id": id}),
        SessionOp::GenerateEnd { stop, evaluated_last } => {
            json!({"type": "generate_end", "stop": stop_name(*stop), "evaluated_last": evaluated_last})
        }
        SessionOp::Note(v) => {
            let mut v = (*v).clone();
            if let Some(o) = v.as_object_mut() {
                o.insert("type".into(), json!("note"));
            }
            v
        }
    }
}

/// Writes a transcript: the header, then one flushed line per op. A write
/// that fails is remembered (see [`TranscriptWriter::error`]) and later
/// lines are dropped, so the session itself never fails for it.
pub struct TranscriptWriter {
    path: PathBuf,
    file: std::fs::File,
    error: Option<String>,
}

impl Header {
    /// The header for a transcript of `session` written by `command`;
    /// `repack` says whether the model's weights were loaded repacked.
    pub fn of(session: &crate::session::Session, command: &str, repack: bool) -> Header {
        let cfg = session.config();
        let m = session.model();
        Header {
            version: VERSION,
            command: command.to_string(),
            model: m.info.path.display().to_string(),
            fingerprint: m.info.fingerprint.clone(),
            n_ctx: session.n_ctx(),
            n_batch: cfg.n_batch,
            n_ubatch: cfg.n_ubatch,
            n_threads: cfg.n_threads,
            type_k: cfg.type_k.name().to_string(),
            type_v: cfg.type_v.name().to_string(),
            repack,
            flash_attn: cfg.flash_attn,
            ggml_attention: cfg.ggml_attention,
            swa_full: cfg.swa_full,
        }
    }
}

impl TranscriptWriter {
    /// Record everything `session` does from now on into a new transcript at `path`.
    pub fn attach(
        session: &mut crate::session::Session,
        path: &Path,
        command: &str,
        repack: bool,
    ) -> Result<Arc<Mutex<TranscriptWriter>>, String> {
        let w = Arc::new(Mutex::new(TranscriptWriter::create(path, &Header::of(session, command, repack))?));
        session.set_recorder(TranscriptWriter::recorder(w.clone()));
        Ok(w)
    }

    /// A new transcript at `path` (an existing file is replaced).
    pub fn create(path: &Path, header: &Header) -> Result<TranscriptWriter, String> {
        let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut w = TranscriptWriter { path: path.to_path_buf(), file, error: None };
        let mut h = serde_json::to_value(header).map_err(|e| e.to_string())?;
        h["type"] = json!("header");
        w.line(&h);
        w.error.take().map_or(Ok(w), Err)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The first failed write, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    pub fn line(&mut self, v: &Value) {
        if self.error.is_some() {
            return;
        }
        let mut s = v.to_string();
        s.push('\n');
        if let Err(e) = self.file.write_all(s.as_bytes()).and_then(|_| self.file.flush()) {
            self.error = Some(format!("{}: {e}", self.path.display()));
        }
    }

    /// A session recorder writing to `w`.
    pub fn recorder(w: Arc<Mutex<TranscriptWriter>>) -> Recorder {
        Box::new(move |op| {
            let v = op_json(&op);
            w.lock().unwrap_or_else(|e| e.into_inner()).line(&v);
        })
    }
}

/// Read a transcript, checking every line; the error names the file and line.
pub fn read(path: &Path) -> Result<Transcript, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("{}: not UTF-8 (byte {})", path.display(), e.utf8_error().valid_up_to()))?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut header: Option<Header> = None;
    let mut entries: Vec<(usize, Entry)> = Vec::new();
    let mut torn = false;
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let at = |msg: String| format!("{} line {n}: {msg}", path.display());
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(_) if n == lines.len() && !complete => {
                torn = true;
                break;
            }
            Err(e) => return Err(at(format!("not JSON ({e})"))),
        };
        let ty = v.get("type").and_then(Value::as_str).ok_or_else(|| at("an entry without a \"type\"".into()))?;
        if n == 1 {
            if ty != "header" {
                return Err(at(format!("the first line must be the header, not '{ty}'")));
            }
            let h: Header = serde_json::from_value(v.clone()).map_err(|e| at(format!("a bad header: {e}")))?;
            if h.version != VERSION {
                return Err(at(format!("transcript version {} (this decache reads version {VERSION})", h.version)));
            }
            header = Some(h);
            continue;
        }
        let field = |k: &str| v.get(k).ok_or_else(|| at(format!("'{ty}' needs \"{k}\"")));
        let ids = |k: &str| -> Result<Vec<u32>, String> {
            serde_json::from_value(field(k)?.clone())
                .map_err(|e| at(format!("\"{k}\" must be a list of token ids: {e}")))
        };
        let pos = |k: &str| -> Result<Pos, String> {
            field(k)?
                .as_i64()
                .and_then(|p| Pos::try_from(p).ok())
                .ok_or_else(|| at(format!("\"{k}\" must be a position")))
        };
        let in_generation = matches!(entries.last(), Some((_, Entry::Generate { end: None, .. })));
        let entry = match ty {
            "eval" => {
                let tokens = ids("tokens")?;
                let positions: Vec<Pos> = match v.get("pos0") {
                    Some(_) => {
                        let p0 = pos("pos0")?;
                        (0..tokens.len()).map(|k| p0 + k as Pos).collect()
                    }
                    None => serde_json::from_value(field("positions")?.clone())
                        .map_err(|e| at(format!("\"positions\": {e}")))?,
                };
                if positions.len() != tokens.len() {
                    return Err(at(format!("{} tokens but {} positions", tokens.len(), positions.len())));
                }
                Entry::Eval { tokens, positions }
            }
            "remove" => {
                let policy = field("policy")?;
                let gap = Gap::deserialize(policy).map_err(|_| at(format!("unknown position policy {policy}")))?;
                Entry::Remove { p0: pos("p0")?, p1: pos("p1")?, gap }
            }
            "open_gap" => Entry::OpenGap { p0: pos("p0")?, n: pos("n")? },
            "defrag" => Entry::Defrag,
            "close_gaps" | "compact_positions" => Entry::CloseGaps,
            "clear" => Entry::Clear,
            "rewind" => Entry::Rewind(pos("next_pos")?),
            "saved" => Entry::Saved(field("tag")?.as_u64().ok_or_else(|| at("\"tag\": not a whole number".into()))?),
            "restore" => Entry::Restore(match v.get("tag") {
                None => None,
                Some(t) => Some(t.as_u64().ok_or_else(|| at("\"tag\": not a whole number".into()))?),
            }),
            "generate" => Entry::Generate {
                prompt: ids("prompt")?,
                sampling: serde_json::from_value(field("sampling")?.clone())
                    .map_err(|e| at(format!("\"sampling\": {e}")))?,
                n_predict: v.get("n_predict").and_then(Value::as_u64).map(|n| n as usize),
                ignore_eos: v.get("ignore_eos").and_then(Value::as_bool).unwrap_or(false),
                forced: v.get("forced").and_then(Value::as_bool).unwrap_or(false),
                tokens: Vec::new(),
                end: None,
            },
            "token" | "generate_end" => {
                let Some((_, Entry::Generate { tokens, end, .. })) = entries.last_mut().filter(|_| in_generation)
                else {
                    return Err(at(format!("'{ty}' outside a generation")));
                };
                if ty == "token" {
                    let id = field("id")?
                        .as_u64()
                        .and_then(|t| u32::try_from(t).ok())
                        .ok_or_else(|| at("\"id\" must be a token id".into()))?;
                    tokens.push(id);
                } else {
                    let stop =
                        field("stop")?.as_str().and_then(stop_of).ok_or_else(|| at("unknown \"stop\"".into()))?;
                    let evaluated = field("evaluated_last")?
                        .as_bool()
                        .ok_or_else(|| at("\"evaluated_last\" must be true or false".into()))?;
                    *end = Some((stop, evaluated));
                }
                continue;
            }
            "note" => Entry::Note(v.clone()),
            other => return Err(at(format!("unknown entry type '{other}'"))),
        };
        if in_generation && !matches!(entry, Entry::Note(_)) {
            return Err(at(format!("'{ty}' inside a generation that has not ended")));
        }
        entries.push((n, entry));
    }
    let header = header.ok_or_else(|| format!("{}: empty (no header line)", path.display()))?;
    Ok(Transcript { header, entries, torn })
}
