//! Session files (`/save`, `/load`): a conversation with its KV cache, so a
//! chat goes on later without prefilling anything again.
//!
//! Layout: 16 bytes of magic, a little-endian u32 format version and u64
//! header length, the header (JSON: model identity, cache layout, the body's
//! SHA-256, the conversation's segments and messages), then the body: the
//! cells' tokens (u32), positions (i32) and live bits (u8), then (format 2,
//! when the sliding-window layers have a pool of their own) that pool's
//! positions (i32) and live bits (u8), then per layer the K rows and the V
//! values of the used cells of the layer's pool. Files are written to a
//! temporary name and renamed, so a crash never leaves half a file under the
//! user's name; loading checks everything before it changes anything.
use super::conversation::{Conversation, ConversationState};
use crate::error::{Error, Result};
use crate::kv::state::RecurrentSnapshot;
use crate::kv::Pos;
use crate::kv::{KvLayout, KvSnapshot, SwaCells};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

const MAGIC: &[u8; 16] = b"DECACHE-SESSION\n";
/// Format 2 added the sliding-window pool; format 1 files (without one) still load.
const VERSION: u32 = 2;
/// Headers are small (segments and messages); anything larger is damage.
const MAX_HEADER: u64 = 256 << 20;

#[derive(Serialize, Deserialize)]
struct Header {
    model: ModelStamp,
    kv: KvHeader,
    conversation: ConversationState,
}

#[derive(Serialize, Deserialize)]
struct ModelStamp {
    fingerprint: String,
    name: Option<String>,
    file: String,
}

#[derive(Serialize, Deserialize)]
struct KvHeader {
    layout: KvLayout,
    used: usize,
    /// Used cells of the sliding-window pool (0 without one).
    #[serde(default)]
    swa_used: usize,
    next_pos: Pos,
    body_bytes: u64,
    sha256: String,
    /// Hybrid models: the recurrent state at the end of the body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    recurrent: Option<RecurrentHeader>,
}

/// Where the recurrent state stands and its size (it ends the body).
#[derive(Serialize, Deserialize)]
struct RecurrentHeader {
    last: Pos,
    bytes: usize,
}

/// What a save or load moved.
#[derive(Clone, Debug)]
pub struct SaveInfo {
    pub bytes: u64,
    pub cells: usize,
    pub live: usize,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encode_body(s: &KvSnapshot) -> Vec<u8> {
    let mut b = Vec::with_capacity(s.used() * 9 + s.data_bytes());
    s.tokens.iter().for_each(|t| b.extend_from_slice(&t.to_le_bytes()));
    s.pos.iter().for_each(|p| b.extend_from_slice(&p.to_le_bytes()));
    b.extend(s.live.iter().map(|&l| u8::from(l)));
    if let Some(w) = &s.swa {
        w.pos.iter().for_each(|p| b.extend_from_slice(&p.to_le_bytes()));
        b.extend(w.live.iter().map(|&l| u8::from(l)));
    }
    for (k, v) in s.k.iter().zip(&s.v) {
        b.extend_from_slice(k);
        b.extend_from_slice(v);
    }
    if let Some(r) = &s.recurrent {
        b.extend_from_slice(&r.data);
    }
    b
}

/// Split the body by the layout's sizes; `rows`: per layer, the bytes of a
/// cell's K row and of its V values.
fn decode_body(body: &[u8], kv: &KvHeader, rows: &[(usize, usize)]) -> std::result::Result<KvSnapshot, String> {
    let (used, swa_used, layout) = (kv.used, kv.swa_used, &kv.layout);
    let has_swa = !layout.swa_layers.is_empty();
    if !has_swa && swa_used > 0 {
        return Err(format!("{swa_used} sliding-window cells, but the layout has no sliding-window pool"));
    }
    if rows.len() != layout.n_layer {
        return Err(format!("{} layers; this model has {}", layout.n_layer, rows.len()));
    }
    let per_layer = |il: usize| match (layout.owns(il), layout.in_swa(il)) {
        (false, _) => 0,
        (true, true) => swa_used,
        (true, false) => used,
    };
    let rec_bytes = kv.recurrent.as_ref().map_or(0, |r| r.bytes);
    let data = (0..layout.n_layer).try_fold(rec_bytes, |acc, il| {
        per_layer(il).checked_mul(rows[il].0 + rows[il].1).and_then(|n| acc.checked_add(n))
    });
    let expect = data.and_then(|d| {
        d.checked_add(used.checked_mul(9)?)?.checked_add(if has_swa { swa_used.checked_mul(5)? } else { 0 })
    });
    if expect != Some(body.len()) {
        return Err(format!(
            "the body holds {} bytes; {used} cells ({swa_used} sliding-window) of this layout need {expect:?}",
            body.len()
        ));
    }
    let (tok, rest) = body.split_at(4 * used);
    let (pos, rest) = rest.split_at(4 * used);
    let (live, rest) = rest.split_at(used);
    let (swa, mut rest) = if has_swa {
        let (sp, r) = rest.split_at(4 * swa_used);
        let (sl, r) = r.split_at(swa_used);
        if let Some(i) = sl.iter().position(|&l| l > 1) {
            return Err(format!("sliding-window cell {i}: live bit is {} (0 or 1)", sl[i]));
        }
        (Some(SwaCells { pos: i32s(sp), live: sl.iter().map(|&l| l == 1).collect() }), r)
    } else {
        (None, rest)
    };
    let mut k = Vec::with_capacity(layout.n_layer);
    let mut v = Vec::with_capacity(layout.n_layer);
    for (il, &(k_row, v_col)) in rows.iter().enumerate() {
        let n = per_layer(il);
        let (kb, r) = rest.split_at(n * k_row);
        let (vb, r) = r.split_at(n * v_col);
        k.push(kb.to_vec());
        v.push(vb.to_vec());
        rest = r;
    }
    let recurrent = kv.recurrent.as_ref().map(|r| RecurrentSnapshot { last: r.last, data: rest.to_vec() });
    if let Some(i) = live.iter().position(|&l| l > 1) {
        return Err(format!("cell {i}: live bit is {} (0 or 1)", live[i]));
    }
    Ok(KvSnapshot {
        layout: layout.clone(),
        next_pos: kv.next_pos,
        tokens: tok.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap())).collect(),
        pos: i32s(pos),
        live: live.iter().map(|&l| l == 1).collect(),
        swa,
        k,
        v,
        recurrent,
    })
}

fn i32s(b: &[u8]) -> Vec<i32> {
    b.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap())).collect()
}

impl Conversation {
    /// Write the conversation and its cache to `path` (atomically).
    pub fn save(&mut self, path: &Path) -> Result<SaveInfo> {
        let file_err = |msg: String| Error::SessionFile { path: path.to_path_buf(), msg };
        let snap = self.session.snapshot()?;
        let body = encode_body(&snap);
        let info = &self.session.model().info;
        let header = Header {
            model: ModelStamp {
                fingerprint: info.fingerprint.clone(),
                name: info.name.clone(),
                file: info.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            },
            kv: KvHeader {
                layout: snap.layout.clone(),
                used: snap.used(),
                swa_used: snap.swa.as_ref().map_or(0, |w| w.pos.len()),
                next_pos: snap.next_pos,
                body_bytes: body.len() as u64,
                sha256: hex(&Sha256::digest(&body)),
                recurrent: snap.recurrent.as_ref().map(|r| RecurrentHeader { last: r.last, bytes: r.data.len() }),
            },
            conversation: self.state(),
        };
        let json = serde_json::to_vec(&header).map_err(|e| file_err(format!("header: {e}")))?;
        let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
        let io = |source| Error::Io { path: tmp.clone(), source };
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(MAGIC).map_err(io)?;
        f.write_all(&VERSION.to_le_bytes()).map_err(io)?;
        f.write_all(&(json.len() as u64).to_le_bytes()).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.write_all(&body).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        let bytes = (MAGIC.len() + 12 + json.len() + body.len()) as u64;
        Ok(SaveInfo { bytes, cells: snap.used(), live: snap.live.iter().filter(|&&l| l).count() })
    }

    /// Replace this conversation (cache included) with the one saved at
    /// `path`. On any error nothing changes.
    pub fn load(&mut self, path: &Path) -> Result<SaveInfo> {
        let file_err = |msg: String| Error::SessionFile { path: path.to_path_buf(), msg };
        let data = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        if data.len() < 28 || &data[..16] != MAGIC {
            return Err(file_err("not a decache session file (bad magic)".into()));
        }
        let version = u32::from_le_bytes(data[16..20].try_into().unwrap());
        if !(1..=VERSION).contains(&version) {
            return Err(file_err(format!("session file format {version}; this decache reads formats 1 to {VERSION}")));
        }
        let hlen = u64::from_le_bytes(data[20..28].try_into().unwrap());
        if hlen > MAX_HEADER || 28 + hlen > data.len() as u64 {
            return Err(file_err(format!(
                "header length {hlen} runs past the end of the file ({} bytes): truncated?",
                data.len()
            )));
        }
        let (head, body) = data[28..].split_at(hlen as usize);
        let h: Header = serde_json::from_slice(head).map_err(|e| file_err(format!("header: {e}")))?;
        let info = &self.session.model().info;
        if h.model.fingerprint != info.fingerprint {
            return Err(file_err(format!(
                "saved with model {} ({}), not this one ({}): a cache only fits the model that made it",
                h.model.file,
                h.model.name.as_deref().unwrap_or("unnamed"),
                info.path.display()
            )));
        }
        if body.len() as u64 != h.kv.body_bytes {
            return Err(file_err(format!(
                "the body holds {} bytes, the header says {}: truncated?",
                body.len(),
                h.kv.body_bytes
            )));
        }
        if hex(&Sha256::digest(body)) != h.kv.sha256 {
            return Err(file_err("the cache data does not match its checksum (the file is damaged)".into()));
        }
        let mine = self.session.kv_layout();
        if h.kv.layout.swa_layers.is_empty() != mine.swa_layers.is_empty() {
            return Err(file_err(if mine.swa_layers.is_empty() {
                "saved with a smaller cache for the sliding-window layers; this session gives them the full one: load it without --swa-full".into()
            } else {
                "saved with the full cache for every layer (--swa-full); load it with --swa-full".into()
            }));
        }
        if h.kv.layout != mine {
            return Err(file_err(format!(
                "saved with a {}/{} cache over {} layers; this session's is {}/{} (give -ctk {} -ctv {})",
                h.kv.layout.type_k,
                h.kv.layout.type_v,
                h.kv.layout.n_layer,
                mine.type_k,
                mine.type_v,
                h.kv.layout.type_k,
                h.kv.layout.type_v
            )));
        }
        let rows = self.session.kv_row_bytes().map_err(|e| file_err(e.to_string()))?;
        let snap = decode_body(body, &h.kv, &rows).map_err(file_err)?;
        self.check_state(&h.conversation, snap.next_pos).map_err(|e| file_err(e.to_string()))?;
        self.session.restore(&snap).map_err(|e| file_err(e.to_string()))?;
        self.set_state(h.conversation);
        Ok(SaveInfo { bytes: data.len() as u64, cells: snap.used(), live: snap.live.iter().filter(|&&l| l).count() })
    }
}
