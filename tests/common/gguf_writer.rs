//! A minimal GGUF v3 writer for tests: typed metadata of every value type,
//! tensors with any name, type id, shape and data, and knobs to write what a
//! valid file never holds (explicit tensor offsets, raw metadata bytes, wrong
//! counts, another magic or version). `tiny_llama()` builds a small but
//! complete llama model (f32 weights, gpt2 BPE vocabulary) that `Model::load`
//! accepts, so that single mutations of a valid file can be tested.
#![allow(dead_code)]

use std::path::Path;

/// GGUF metadata value type ids.
pub mod vt {
    pub const U8: u32 = 0;
    pub const I8: u32 = 1;
    pub const U16: u32 = 2;
    pub const I16: u32 = 3;
    pub const U32: u32 = 4;
    pub const I32: u32 = 5;
    pub const F32: u32 = 6;
    pub const BOOL: u32 = 7;
    pub const STRING: u32 = 8;
    pub const ARRAY: u32 = 9;
    pub const U64: u32 = 10;
    pub const I64: u32 = 11;
    pub const F64: u32 = 12;
}

/// ggml tensor type ids used by the tests.
pub mod tt {
    pub const F32: u32 = 0;
    pub const F16: u32 = 1;
    pub const Q4_0: u32 = 2;
    pub const Q4_1: u32 = 3;
    pub const Q8_0: u32 = 8;
    pub const Q4_K: u32 = 12;
    pub const I8: u32 = 24;
}

/// A metadata value.
#[derive(Clone, Debug)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    /// Element type id and elements (each must be of that type).
    Array(u32, Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
    /// Any type id followed by raw payload bytes (for corrupt values).
    Raw(u32, Vec<u8>),
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(s.to_string())
    }

    pub fn strs<S: AsRef<str>>(items: &[S]) -> Value {
        Value::Array(vt::STRING, items.iter().map(|s| Value::Str(s.as_ref().to_string())).collect())
    }

    pub fn i32s(items: &[i32]) -> Value {
        Value::Array(vt::I32, items.iter().map(|&v| Value::I32(v)).collect())
    }

    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => vt::U8,
            Value::I8(_) => vt::I8,
            Value::U16(_) => vt::U16,
            Value::I16(_) => vt::I16,
            Value::U32(_) => vt::U32,
            Value::I32(_) => vt::I32,
            Value::F32(_) => vt::F32,
            Value::Bool(_) => vt::BOOL,
            Value::Str(_) => vt::STRING,
            Value::Array(..) => vt::ARRAY,
            Value::U64(_) => vt::U64,
            Value::I64(_) => vt::I64,
            Value::F64(_) => vt::F64,
            Value::Raw(t, _) => *t,
        }
    }

    /// The payload only (no type id).
    fn write_payload(&self, out: &mut Vec<u8>) {
        match self {
            Value::U8(v) => out.push(*v),
            Value::I8(v) => out.extend(v.to_le_bytes()),
            Value::U16(v) => out.extend(v.to_le_bytes()),
            Value::I16(v) => out.extend(v.to_le_bytes()),
            Value::U32(v) => out.extend(v.to_le_bytes()),
            Value::I32(v) => out.extend(v.to_le_bytes()),
            Value::F32(v) => out.extend(v.to_le_bytes()),
            Value::Bool(v) => out.push(u8::from(*v)),
            Value::Str(s) => put_str(out, s),
            Value::Array(elem, items) => {
                put_u32(out, *elem);
                put_u64(out, items.len() as u64);
                for it in items {
                    assert_eq!(it.type_id(), *elem, "array element of another type than the array's");
                    it.write_payload(out);
                }
            }
            Value::U64(v) => out.extend(v.to_le_bytes()),
            Value::I64(v) => out.extend(v.to_le_bytes()),
            Value::F64(v) => out.extend(v.to_le_bytes()),
            Value::Raw(_, bytes) => out.extend_from_slice(bytes),
        }
    }
}

/// One metadata entry: a key and a value, or raw bytes written verbatim in
/// its place (for a corrupt key).
#[derive(Clone, Debug)]
pub enum Kv {
    Pair(String, Value),
    Raw(Vec<u8>),
}

/// One tensor: its table entry and its data.
#[derive(Clone, Debug)]
pub struct TensorDef {
    pub name: String,
    /// Dimensions in ggml order (ne[0] first); the table holds `dims.len()` of them.
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub data: Vec<u8>,
    /// Offset written in the table (relative to the data section) instead of
    /// the one the writer computes; the data is still placed where the writer
    /// would have put it.
    pub offset: Option<u64>,
}

/// Where the parts of a written file lie.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Start of the metadata (just after the fixed 24-byte header).
    pub kv_start: usize,
    /// Start of the tensor table (just after the metadata).
    pub table_start: usize,
    /// Start of the tensor data section (after alignment padding).
    pub data_start: usize,
    /// Absolute byte ranges of each tensor's data.
    pub tensor_ranges: Vec<(usize, usize)>,
}

/// A GGUF file under construction.
#[derive(Clone, Debug)]
pub struct Gguf {
    pub magic: [u8; 4],
    pub version: u32,
    /// Alignment used for padding the data (the writer does not add the
    /// `general.alignment` key by itself).
    pub alignment: usize,
    pub kvs: Vec<Kv>,
    pub tensors: Vec<TensorDef>,
    /// Counts written in the header instead of the real ones.
    pub n_kv_override: Option<u64>,
    pub n_tensors_override: Option<u64>,
}

impl Default for Gguf {
    fn default() -> Self {
        Gguf {
            magic: *b"GGUF",
            version: 3,
            alignment: 32,
            kvs: Vec::new(),
            tensors: Vec::new(),
            n_kv_override: None,
            n_tensors_override: None,
        }
    }
}

impl Gguf {
    pub fn new() -> Gguf {
        Gguf::default()
    }

    /// Set `key` (replacing its value in place if present, else appending).
    pub fn set(&mut self, key: &str, v: Value) -> &mut Self {
        for kv in &mut self.kvs {
            if let Kv::Pair(k, old) = kv {
                if k == key {
                    *old = v;
                    return self;
                }
            }
        }
        self.kvs.push(Kv::Pair(key.to_string(), v));
        self
    }

    /// Remove `key`; panics if absent (a test bug).
    pub fn remove(&mut self, key: &str) -> &mut Self {
        let before = self.kvs.len();
        self.kvs.retain(|kv| !matches!(kv, Kv::Pair(k, _) if k == key));
        assert!(self.kvs.len() < before, "no metadata key {key}");
        self
    }

    pub fn raw_kv(&mut self, bytes: Vec<u8>) -> &mut Self {
        self.kvs.push(Kv::Raw(bytes));
        self
    }

    pub fn tensor(&mut self, name: &str, type_id: u32, dims: &[u64], data: Vec<u8>) -> &mut Self {
        self.tensors.push(TensorDef { name: name.to_string(), dims: dims.to_vec(), type_id, data, offset: None });
        self
    }

    /// An f32 tensor filled from `rng`.
    pub fn tensor_f32(&mut self, name: &str, dims: &[u64], rng: &mut Rng) -> &mut Self {
        let n: u64 = dims.iter().product();
        let vals: Vec<f32> = (0..n).map(|_| rng.f32_sym() * 0.1).collect();
        self.tensor(name, tt::F32, dims, f32_bytes(&vals))
    }

    pub fn tensor_mut(&mut self, name: &str) -> &mut TensorDef {
        self.tensors.iter_mut().find(|t| t.name == name).unwrap_or_else(|| panic!("no tensor {name}"))
    }

    pub fn remove_tensor(&mut self, name: &str) -> &mut Self {
        let before = self.tensors.len();
        self.tensors.retain(|t| t.name != name);
        assert!(self.tensors.len() < before, "no tensor {name}");
        self
    }

    /// The file's bytes and where its parts lie.
    pub fn build(&self) -> (Vec<u8>, Layout) {
        let mut out = Vec::new();
        out.extend_from_slice(&self.magic);
        put_u32(&mut out, self.version);
        put_u64(&mut out, self.n_tensors_override.unwrap_or(self.tensors.len() as u64));
        put_u64(&mut out, self.n_kv_override.unwrap_or(self.kvs.len() as u64));
        let kv_start = out.len();
        for kv in &self.kvs {
            match kv {
                Kv::Pair(k, v) => {
                    put_str(&mut out, k);
                    put_u32(&mut out, v.type_id());
                    v.write_payload(&mut out);
                }
                Kv::Raw(bytes) => out.extend_from_slice(bytes),
            }
        }
        let table_start = out.len();
        // Data placement relative to the data section: each tensor aligned.
        let mut rel = Vec::with_capacity(self.tensors.len());
        let mut cursor = 0usize;
        for t in &self.tensors {
            rel.push(cursor);
            cursor = align_up(cursor + t.data.len(), self.alignment);
        }
        for (t, &r) in self.tensors.iter().zip(&rel) {
            put_str(&mut out, &t.name);
            put_u32(&mut out, t.dims.len() as u32);
            for &d in &t.dims {
                put_u64(&mut out, d);
            }
            put_u32(&mut out, t.type_id);
            put_u64(&mut out, t.offset.unwrap_or(r as u64));
        }
        let data_start = align_up(out.len(), self.alignment);
        out.resize(data_start, 0);
        let mut tensor_ranges = Vec::with_capacity(self.tensors.len());
        for (t, &r) in self.tensors.iter().zip(&rel) {
            let start = data_start + r;
            out.resize(start, 0);
            out.extend_from_slice(&t.data);
            tensor_ranges.push((start, start + t.data.len()));
        }
        (out, Layout { kv_start, table_start, data_start, tensor_ranges })
    }

    /// Write the file; returns its layout.
    pub fn write(&self, path: &Path) -> Layout {
        let (bytes, layout) = self.build();
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        layout
    }
}

pub fn align_up(x: usize, a: usize) -> usize {
    x.div_ceil(a) * a
}

pub fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend(v.to_le_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend(v.to_le_bytes());
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u64(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Bytes of one Q4_K block of 256 values: f16 d, f16 dmin, 12 scale bytes, 128 nibble bytes.
pub const Q4_K_BLOCK: usize = 144;

/// Random Q4_K data for `n` values: fixed small scales (2^-9, 2^-10 in
/// f16) so every value is finite, random 6-bit sub-scales and nibbles.
pub fn q4_k(n: u64, rng: &mut Rng) -> Vec<u8> {
    assert_eq!(n % 256, 0, "Q4_K rows hold whole blocks");
    let blocks = (n / 256) as usize;
    let mut out = vec![0u8; blocks * Q4_K_BLOCK];
    for b in out.chunks_exact_mut(Q4_K_BLOCK) {
        b[0..2].copy_from_slice(&0x1800u16.to_le_bytes());
        b[2..4].copy_from_slice(&0x1400u16.to_le_bytes());
        for chunk in b[4..].chunks_mut(8) {
            let r = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
    out
}

/// Bytes of one Q4_1 block of 32 values: f16 d, f16 m, 16 nibble bytes
/// (ggml's `block_q4_1`; value = d * q + m).
pub const Q4_1_BLOCK: usize = 20;

/// Random Q4_1 data for `n` values: a fixed scale d = 2^-6 and minimum
/// m = -7.5 d (in f16), so the values are symmetric about zero within
/// ±0.117 (about `tensor_f32`'s range), with random nibbles.
pub fn q4_1(n: u64, rng: &mut Rng) -> Vec<u8> {
    assert_eq!(n % 32, 0, "Q4_1 rows hold whole blocks");
    let blocks = (n / 32) as usize;
    let mut out = vec![0u8; blocks * Q4_1_BLOCK];
    for b in out.chunks_exact_mut(Q4_1_BLOCK) {
        b[0..2].copy_from_slice(&0x2400u16.to_le_bytes());
        b[2..4].copy_from_slice(&0xaf80u16.to_le_bytes());
        for chunk in b[4..].chunks_mut(8) {
            let r = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
    }
    out
}

/// A small deterministic generator (xorshift64*), so tests need no seed files.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, never zero
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 for n = 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Uniform in [-1, 1).
    pub fn f32_sym(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Shape of the tiny llama model.
pub mod tiny {
    pub const N_EMBD: u64 = 64;
    pub const N_LAYER: u64 = 2;
    pub const N_HEAD: u64 = 4;
    pub const N_HEAD_KV: u64 = 2;
    pub const HEAD_DIM: u64 = N_EMBD / N_HEAD;
    pub const N_FF: u64 = 128;
    /// Special tokens, then the 256 byte-level tokens, then merged tokens.
    pub const SPECIALS: &[&str] = &["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    pub const N_VOCAB: u64 = 300;
    /// Tensors: token_embd, output_norm, and 9 per layer.
    pub const N_TENSORS: usize = 2 + 9 * N_LAYER as usize;
}

/// GPT-2's byte-to-unicode map: printable bytes stand for themselves, the
/// others are shifted to U+0100 and up, in byte order.
pub fn gpt2_byte_chars() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
    let mut next = 256u32;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).unwrap()
            } else {
                let c = char::from_u32(next).unwrap();
                next += 1;
                c
            }
        })
        .collect()
}

/// The tiny model's vocabulary and merges.
pub fn tiny_vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = tiny::SPECIALS.iter().map(|s| s.to_string()).collect();
    let mut types: Vec<i32> = vec![3; tokens.len()];
    for c in gpt2_byte_chars() {
        tokens.push(c.to_string());
        types.push(1);
    }
    // Merges "a b" -> "ab", in priority order; later ones may build on earlier ones.
    let space = gpt2_byte_chars()[b' ' as usize].to_string();
    let mut merges: Vec<(String, String)> = vec![
        (space.clone(), "t".into()),
        (space.clone(), "a".into()),
        ("t".into(), "h".into()),
        ("th".into(), "e".into()),
        (format!("{space}t"), "h".into()),
        (format!("{space}th"), "e".into()),
    ];
    let bigrams =
        "in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou io le ve co me de hi ri ro";
    for bg in bigrams.split(' ') {
        let (a, b) = bg.split_at(1);
        merges.push((a.into(), b.into()));
    }
    for (a, b) in &merges {
        tokens.push(format!("{a}{b}"));
        types.push(1);
    }
    assert_eq!(tokens.len() as u64, tiny::N_VOCAB, "tiny vocabulary size");
    let merges = merges.into_iter().map(|(a, b)| format!("{a} {b}")).collect();
    (tokens, types, merges)
}

/// Name of a per-layer tensor.
pub fn blk(il: u64, suffix: &str) -> String {
    format!("blk.{il}.{suffix}")
}

/// A complete, valid llama model: n_embd 64, 2 layers, 4 heads (2 kv heads),
/// The llama hyper-parameters and the tiny gpt2 vocabulary (`tiny_vocab`).
pub fn llama_header(g: &mut Gguf, n_layer: u64, n_embd: u64, n_ff: u64, n_head: u64, n_head_kv: u64) {
    arch_header(g, "llama", n_layer, n_embd, n_ff, n_head, n_head_kv);
}

/// The hyper-parameters of architecture `arch` (keys under its prefix)
/// and the tiny gpt2 vocabulary (`tiny_vocab`).
pub fn arch_header(g: &mut Gguf, arch: &str, n_layer: u64, n_embd: u64, n_ff: u64, n_head: u64, n_head_kv: u64) {
    let (tokens, types, merges) = tiny_vocab();
    let k = |s: &str| format!("{arch}.{s}");
    g.set("general.architecture", Value::str(arch))
        .set(&k("block_count"), Value::U32(n_layer as u32))
        .set(&k("context_length"), Value::U32(256))
        .set(&k("embedding_length"), Value::U32(n_embd as u32))
        .set(&k("feed_forward_length"), Value::U32(n_ff as u32))
        .set(&k("attention.head_count"), Value::U32(n_head as u32))
        .set(&k("attention.head_count_kv"), Value::U32(n_head_kv as u32))
        .set(&k("rope.freq_base"), Value::F32(10000.0))
        .set(&k("attention.layer_norm_rms_epsilon"), Value::F32(1e-5))
        .set("tokenizer.ggml.model", Value::str("gpt2"))
        .set("tokenizer.ggml.pre", Value::str("smollm"))
        .set("tokenizer.ggml.tokens", Value::strs(&tokens))
        .set("tokenizer.ggml.token_type", Value::i32s(&types))
        .set("tokenizer.ggml.merges", Value::strs(&merges))
        .set("tokenizer.ggml.add_bos_token", Value::Bool(false));
}

/// n_ff 128, 300-token gpt2 vocabulary, random f32 weights (fixed seed).
pub fn tiny_llama() -> Gguf {
    use tiny::*;
    let mut g = Gguf::new();
    g.set("general.name", Value::str("tiny-test-llama")).set("general.file_type", Value::U32(0));
    llama_header(&mut g, N_LAYER, N_EMBD, N_FF, N_HEAD, N_HEAD_KV);
    g.set("llama.rope.dimension_count", Value::U32(HEAD_DIM as u32))
        .set("tokenizer.ggml.bos_token_id", Value::U32(0))
        .set("tokenizer.ggml.eos_token_id", Value::U32(2));

    let mut rng = Rng::new(0x7e57);
    let dims = LlamaDims {
        n_vocab: N_VOCAB,
        n_embd: N_EMBD,
        n_layer: N_LAYER,
        n_head: N_HEAD,
        n_head_kv: N_HEAD_KV,
        n_ff: N_FF,
    };
    llama_tensors(&mut g, &dims, &mut rng);
    assert_eq!(g.tensors.len(), N_TENSORS);
    g
}

/// The shape of a llama model's tensors.
pub struct LlamaDims {
    pub n_vocab: u64,
    pub n_embd: u64,
    pub n_layer: u64,
    pub n_head: u64,
    pub n_head_kv: u64,
    pub n_ff: u64,
}

/// A llama's tensors with random f32 weights from `rng` and norms of ones:
/// token_embd (the output shares it), output_norm, and 9 per layer.
pub fn llama_tensors(g: &mut Gguf, d: &LlamaDims, rng: &mut Rng) {
    let head_dim = d.n_embd / d.n_head;
    let kv = head_dim * d.n_head_kv;
    let ones = f32_bytes(&vec![1.0; d.n_embd as usize]);
    g.tensor_f32("token_embd.weight", &[d.n_embd, d.n_vocab], rng);
    g.tensor("output_norm.weight", tt::F32, &[d.n_embd], ones.clone());
    for il in 0..d.n_layer {
        g.tensor(&blk(il, "attn_norm.weight"), tt::F32, &[d.n_embd], ones.clone());
        g.tensor_f32(&blk(il, "attn_q.weight"), &[d.n_embd, head_dim * d.n_head], rng);
        g.tensor_f32(&blk(il, "attn_k.weight"), &[d.n_embd, kv], rng);
        g.tensor_f32(&blk(il, "attn_v.weight"), &[d.n_embd, kv], rng);
        g.tensor_f32(&blk(il, "attn_output.weight"), &[head_dim * d.n_head, d.n_embd], rng);
        g.tensor(&blk(il, "ffn_norm.weight"), tt::F32, &[d.n_embd], ones.clone());
        g.tensor_f32(&blk(il, "ffn_gate.weight"), &[d.n_embd, d.n_ff], rng);
        g.tensor_f32(&blk(il, "ffn_up.weight"), &[d.n_embd, d.n_ff], rng);
        g.tensor_f32(&blk(il, "ffn_down.weight"), &[d.n_ff, d.n_embd], rng);
    }
}
