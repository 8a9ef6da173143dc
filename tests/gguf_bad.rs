//! Malformed GGUF files: every one must give an error that names the file and
//! the problem, through the library (`GgufFile::open`, `Model::load`) and
//! through the CLI (`decache info FILE`: non-zero exit, no signal, no panic).
//! Never a panic, an abort inside ggml, or a crash.
//!
//! Most files are mutations of a tiny valid llama model written by
//! `common/gguf_writer.rs`; the truncated-data cases also cut the real
//! SmolLM2 file.

#[path = "common/gguf_writer.rs"]
mod gguf_writer;

use decache::gguf::GgufFile;
use decache::model::{LoadOptions, Model};
use gguf_writer::*;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

// ---------------------------------------------------------------- helpers

/// A file in its own temporary directory (removed on drop).
struct TestFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

fn test_file(name: &str, bytes: &[u8]) -> TestFile {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).expect("write test file");
    TestFile { _dir: dir, path }
}

/// The tiny valid model after `edit`.
fn tiny_with(edit: impl FnOnce(&mut Gguf)) -> Vec<u8> {
    let mut g = tiny_llama();
    edit(&mut g);
    g.build().0
}

fn real_model() -> PathBuf {
    let p = decache::pull::default_model_path();
    assert!(p.exists(), "{} is missing: run `make models` first", p.display());
    p
}

/// The first `len` bytes of `src`, as a new file.
fn truncated_copy(src: &Path, len: u64, name: &str) -> TestFile {
    use std::io::Read;
    let mut buf = Vec::with_capacity(len as usize);
    std::fs::File::open(src).expect("open source").take(len).read_to_end(&mut buf).expect("read source");
    assert_eq!(buf.len() as u64, len);
    test_file(name, &buf)
}

/// Each keyword must occur in `msg` (case-insensitive); `a|b` accepts either.
fn missing_keywords(msg: &str, keywords: &[&str]) -> Vec<String> {
    let lower = msg.to_lowercase();
    keywords
        .iter()
        .filter(|k| !k.split('|').any(|alt| lower.contains(&alt.to_lowercase())))
        .map(|k| k.to_string())
        .collect()
}

fn assert_names(what: &str, msg: &str, path: &Path, keywords: &[&str]) {
    let p = path.display().to_string();
    assert!(msg.contains(&p), "{what}: the error does not name the file {p}:\n  {msg}");
    let missing = missing_keywords(msg, keywords);
    assert!(missing.is_empty(), "{what}: the error does not say {missing:?}:\n  {msg}");
}

fn load(path: &Path, no_mmap: bool) -> decache::Result<Model> {
    Model::load(path, &LoadOptions { no_mmap, ..LoadOptions::default() })
}

/// Where the problem must be caught.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Level {
    /// By `GgufFile::open` (the container is malformed).
    Gguf,
    /// By `Model::load` (a valid container, not a valid model).
    Model,
}

/// The library rejects `path` at `level` (mapped and unmapped), naming the
/// file and the keywords.
fn assert_lib_rejects(path: &Path, level: Level, keywords: &[&str]) {
    for no_mmap in [false, true] {
        let opened = GgufFile::open(path, no_mmap);
        match (level, opened) {
            (Level::Gguf, Ok(_)) => panic!("GgufFile::open(no_mmap={no_mmap}) accepted {}", path.display()),
            (Level::Gguf, Err(e)) => {
                assert_names(&format!("GgufFile::open(no_mmap={no_mmap})"), &e.to_string(), path, keywords)
            }
            (Level::Model, Err(e)) => panic!("GgufFile::open(no_mmap={no_mmap}) should accept the container, got: {e}"),
            (Level::Model, Ok(_)) => {}
        }
        match load(path, no_mmap) {
            Ok(_) => panic!("Model::load(no_mmap={no_mmap}) accepted {}", path.display()),
            Err(e) => assert_names(&format!("Model::load(no_mmap={no_mmap})"), &e.to_string(), path, keywords),
        }
    }
}

/// Runs `decache info PATH`; returns the exit status and stderr.
fn cli_info(path: &Path) -> (std::process::ExitStatus, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_decache"))
        .arg("info")
        .arg(path)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run decache");
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `decache info PATH` fails cleanly: an exit code (not a signal), non-zero,
/// not a panic, and stderr names the file and the keywords.
fn assert_cli_rejects(path: &Path, keywords: &[&str]) {
    let (status, _stdout, stderr) = cli_info(path);
    assert_eq!(status.signal(), None, "decache info {} was killed by a signal; stderr:\n{stderr}", path.display());
    let code = status.code().expect("an exit code");
    assert_ne!(code, 0, "decache info accepted {}; stderr:\n{stderr}", path.display());
    assert!(!stderr.contains("panicked"), "decache info {} panicked (exit {code}):\n{stderr}", path.display());
    assert_ne!(code, 101, "exit code 101 is a Rust panic; stderr:\n{stderr}");
    assert!(stderr.contains("error"), "stderr has no 'error:' line:\n{stderr}");
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(stderr.contains(name.as_ref()), "decache info: stderr does not name the file {name}:\n{stderr}");
    let missing = missing_keywords(&stderr, keywords);
    assert!(missing.is_empty(), "decache info: stderr does not say {missing:?}:\n{stderr}");
}

/// Both the library and the CLI reject `path`.
fn assert_rejected(path: &Path, level: Level, keywords: &[&str]) {
    assert_lib_rejects(path, level, keywords);
    assert_cli_rejects(path, keywords);
}

fn reject_bytes(name: &str, bytes: &[u8], level: Level, keywords: &[&str]) {
    let f = test_file(name, bytes);
    assert_rejected(&f.path, level, keywords);
}

fn u64_le(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

// ------------------------------------------------------- the valid baseline

#[test]
fn tiny_model_is_valid_loads_runs_and_info_accepts_it() {
    let f = test_file("tiny-valid.gguf", &tiny_llama().build().0);
    let g = GgufFile::open(&f.path, false).expect("tiny model opens");
    assert_eq!(g.version, 3);
    assert_eq!(g.tensors.len(), tiny::N_TENSORS);
    for no_mmap in [false, true] {
        let m = load(&f.path, no_mmap).unwrap_or_else(|e| panic!("tiny model must load (no_mmap={no_mmap}): {e}"));
        assert_eq!(m.hparams.n_vocab as u64, tiny::N_VOCAB);
        assert_eq!(m.hparams.n_layer as u64, tiny::N_LAYER);
        assert_eq!(m.hparams.n_head_kv as u64, tiny::N_HEAD_KV);
        assert_eq!(m.tokenizer.n_vocab() as u64, tiny::N_VOCAB);
        // The merges are used: "the" is one token, " the" too.
        assert_eq!(m.tokenizer.encode("the", false, false).unwrap().len(), 1);
        assert_eq!(m.tokenizer.encode(" the", false, false).unwrap().len(), 1);
        let ids = m.tokenizer.encode("in the sea, 42!", false, false).unwrap();
        let model = Arc::new(m);
        let cfg = decache::session::SessionConfig { n_ctx: 64, n_threads: 1, ..Default::default() };
        let mut s = decache::session::Session::new(model, cfg).expect("session on the tiny model");
        let logits = s.eval(&ids, false).expect("forward pass on the tiny model");
        assert_eq!(logits.len() as u64, tiny::N_VOCAB);
        assert!(logits.iter().all(|x| x.is_finite()), "non-finite logits");
    }
    let (status, stdout, stderr) = cli_info(&f.path);
    assert!(
        status.success(),
        "decache info rejects the valid tiny model: {status:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
}

#[test]
fn writer_round_trips_every_metadata_type() {
    let mut g = Gguf::new();
    g.set("general.architecture", Value::str("llama"))
        .set("t.u8", Value::U8(250))
        .set("t.i8", Value::I8(-7))
        .set("t.u16", Value::U16(65000))
        .set("t.i16", Value::I16(-32000))
        .set("t.u32", Value::U32(4_000_000_000))
        .set("t.i32", Value::I32(-2_000_000_000))
        .set("t.f32", Value::F32(1.5))
        .set("t.bool", Value::Bool(true))
        .set("t.str", Value::str("héllo"))
        .set("t.u64", Value::U64(1 << 40))
        .set("t.i64", Value::I64(-(1 << 40)))
        .set("t.f64", Value::F64(-0.25))
        .set("t.arr_i32", Value::i32s(&[1, -2, 3]))
        .set("t.arr_str", Value::strs(&["a", "bc"]))
        .set("t.arr_f32", Value::Array(vt::F32, vec![Value::F32(0.5), Value::F32(2.0)]))
        .set("t.arr_empty", Value::Array(vt::U8, vec![]));
    g.tensor("a", tt::F32, &[8, 2], f32_bytes(&[0.0; 16]));
    g.tensor("b", tt::F16, &[5], vec![0; 10]);
    let f = test_file("roundtrip.gguf", &g.build().0);
    let file = GgufFile::open(&f.path, false).expect("writer output opens");
    assert_eq!(file.get_u32("t.u8").unwrap(), Some(250));
    assert_eq!(file.metadata["t.i8"].as_i64(), Some(-7));
    assert_eq!(file.get_u32("t.u16").unwrap(), Some(65000));
    assert_eq!(file.metadata["t.i16"].as_i64(), Some(-32000));
    assert_eq!(file.get_u32("t.u32").unwrap(), Some(4_000_000_000));
    assert_eq!(file.metadata["t.i32"].as_i64(), Some(-2_000_000_000));
    assert_eq!(file.get_f32("t.f32").unwrap(), Some(1.5));
    assert_eq!(file.get_bool("t.bool").unwrap(), Some(true));
    assert_eq!(file.get_str("t.str").unwrap(), Some("héllo"));
    assert_eq!(file.get_u64("t.u64").unwrap(), Some(1 << 40));
    assert_eq!(file.metadata["t.i64"].as_i64(), Some(-(1 << 40)));
    assert_eq!(file.get_f32("t.f64").unwrap(), Some(-0.25));
    assert_eq!(file.get_i64_array("t.arr_i32").unwrap(), Some(vec![1, -2, 3]));
    assert_eq!(file.get_str_array("t.arr_str").unwrap(), Some(vec!["a".to_string(), "bc".to_string()]));
    assert_eq!(file.get_f32_array("t.arr_f32").unwrap(), Some(vec![0.5, 2.0]));
    assert_eq!(file.get_i64_array("t.arr_empty").unwrap(), Some(vec![]));
    let (a, b) = (file.tensor("a").unwrap(), file.tensor("b").unwrap());
    assert_eq!((a.ne, a.nbytes, a.offset % 32), ([8, 2, 1, 1], 64, 0));
    assert_eq!((b.ne, b.nbytes, b.offset % 32), ([5, 1, 1, 1], 10, 0));
    assert_eq!(b.offset - a.offset, 64);
}

#[test]
fn real_model_opens() {
    let g = GgufFile::open(&real_model(), false).expect("the real model opens");
    assert_eq!(g.version, 3);
    assert_eq!(g.tensors.len(), 272);
}

// ------------------------------------------------------------ the container

#[test]
fn empty_file() {
    reject_bytes("empty.gguf", b"", Level::Gguf, &["too small|empty|truncated"]);
}

#[test]
fn shorter_than_the_magic() {
    reject_bytes("two-bytes.gguf", b"GG", Level::Gguf, &["too small|truncated"]);
}

#[test]
fn header_only_and_no_counts() {
    // Magic and version, then nothing.
    let mut b = b"GGUF".to_vec();
    b.extend(3u32.to_le_bytes());
    reject_bytes("magic-and-version.gguf", &b, Level::Gguf, &["too small|truncated"]);
}

#[test]
fn bad_magic() {
    let mut b = tiny_llama().build().0;
    b[..4].copy_from_slice(b"GGML");
    reject_bytes("bad-magic.gguf", &b, Level::Gguf, &["not a GGUF file", "GGML"]);
    reject_bytes("text.gguf", b"this is a text file, not a model at all\n", Level::Gguf, &["not a GGUF file"]);
}

#[test]
fn unsupported_versions() {
    for v in [0u32, 1, 4, 0xFFFF, u32::MAX] {
        let mut g = tiny_llama();
        g.version = v;
        reject_bytes(&format!("version-{v}.gguf"), &g.build().0, Level::Gguf, &["version", &v.to_string()]);
    }
}

#[test]
fn truncated_in_the_metadata() {
    let (bytes, l) = tiny_llama().build();
    // The middle of the metadata, and a few cuts right after the fixed header.
    for cut in [l.kv_start + 3, l.kv_start + 40, (l.kv_start + l.table_start) / 2, l.table_start - 1] {
        reject_bytes(&format!("cut-meta-{cut}.gguf"), &bytes[..cut], Level::Gguf, &["truncated"]);
    }
}

#[test]
fn truncated_in_the_tensor_table() {
    let (bytes, l) = tiny_llama().build();
    for cut in [l.table_start + 1, (l.table_start + l.data_start) / 2, l.data_start - 33] {
        reject_bytes(&format!("cut-table-{cut}.gguf"), &bytes[..cut], Level::Gguf, &["truncated"]);
    }
}

#[test]
fn truncated_in_the_tensor_data_tiny() {
    let (bytes, l) = tiny_llama().build();
    let (last_start, last_end) = *l.tensor_ranges.last().unwrap();
    let last = &tiny_llama().tensors.last().unwrap().name.clone();
    // The data section is absent, then the last tensor is cut in its middle and by one byte.
    reject_bytes("cut-data-0.gguf", &bytes[..l.data_start], Level::Gguf, &["past the end|truncated"]);
    reject_bytes(
        "cut-data-mid.gguf",
        &bytes[..(last_start + last_end) / 2],
        Level::Gguf,
        &["past the end|truncated", last],
    );
    reject_bytes("cut-data-1.gguf", &bytes[..last_end - 1], Level::Gguf, &["past the end|truncated", last]);
}

#[test]
fn truncated_real_model_at_half() {
    let src = real_model();
    let size = std::fs::metadata(&src).unwrap().len();
    let f = truncated_copy(&src, size / 2, "smollm2-cut-50pct.gguf");
    assert_rejected(&f.path, Level::Gguf, &["past the end|truncated"]);
}

#[test]
fn truncated_real_model_at_99_9_percent() {
    let src = real_model();
    let size = std::fs::metadata(&src).unwrap().len();
    let f = truncated_copy(&src, size - size / 1000, "smollm2-cut-99.9pct.gguf");
    assert_rejected(&f.path, Level::Gguf, &["past the end|truncated"]);
}

#[test]
fn tensor_offset_out_of_range() {
    let name = blk(0, "attn_q.weight");
    let b = tiny_with(|g| g.tensor_mut(&name).offset = Some(1 << 40));
    reject_bytes("offset-far.gguf", &b, Level::Gguf, &[&name, "past the end"]);
    // Just past the end: the data would start at the file's last aligned byte.
    let (bytes, l) = tiny_llama().build();
    let rel = align_up(bytes.len() - l.data_start, 32) as u64;
    let b = tiny_with(|g| g.tensor_mut("output_norm.weight").offset = Some(rel));
    reject_bytes("offset-end.gguf", &b, Level::Gguf, &["output_norm.weight", "past the end"]);
    // So far that start + size overflows 64 bits.
    let b = tiny_with(|g| g.tensor_mut("token_embd.weight").offset = Some(!31));
    reject_bytes("offset-overflow.gguf", &b, Level::Gguf, &["token_embd.weight", "overflow|past the end"]);
}

#[test]
fn tensor_offset_misaligned() {
    for off in [1u64, 4, 31] {
        let b = tiny_with(|g| g.tensor_mut("token_embd.weight").offset = Some(off));
        reject_bytes(&format!("offset-misaligned-{off}.gguf"), &b, Level::Gguf, &["token_embd.weight", "aligned"]);
    }
}

#[test]
fn unknown_tensor_type_ids() {
    // 4 and 5 are ggml's removed Q4_2/Q4_3, 36-38 its removed repacked ids;
    // 43 is GGML_TYPE_COUNT in the pinned ggml (40 is NVFP4, a real type); then nonsense.
    for id in [4u32, 5, 36, 43, 44, 1000, u32::MAX] {
        let b = tiny_with(|g| g.tensor_mut("output_norm.weight").type_id = id);
        reject_bytes(&format!("type-{id}.gguf"), &b, Level::Gguf, &["type"]);
    }
}

#[test]
fn tensor_dimension_counts() {
    let b = tiny_with(|g| g.tensor_mut("output_norm.weight").dims = vec![tiny::N_EMBD, 1, 1, 1, 1]);
    reject_bytes("dims-5.gguf", &b, Level::Gguf, &["output_norm.weight", "dimensions"]);
    let b = tiny_with(|g| g.tensor_mut("output_norm.weight").dims = vec![]);
    reject_bytes("dims-0.gguf", &b, Level::Gguf, &["output_norm.weight", "dimensions"]);
    let b = tiny_with(|g| g.tensor_mut("output_norm.weight").dims = vec![1; 100]);
    reject_bytes("dims-100.gguf", &b, Level::Gguf, &["output_norm.weight", "dimensions"]);
}

#[test]
fn tensor_dimension_zero() {
    let b = tiny_with(|g| g.tensor_mut("token_embd.weight").dims = vec![tiny::N_EMBD, 0]);
    reject_bytes("dim-zero.gguf", &b, Level::Gguf, &["token_embd.weight", "dimension|shape"]);
}

#[test]
fn tensor_dimension_absurd() {
    // f32 of 2^62 elements: the byte size overflows 64 bits.
    let b = tiny_with(|g| g.tensor_mut("output_norm.weight").dims = vec![1 << 62]);
    reject_bytes("dim-2e62-f32.gguf", &b, Level::Gguf, &["output_norm.weight", "overflow|too large|past the end"]);
    // i8 of 2^62 elements: a representable size, far past the end of the file.
    let b = tiny_with(|g| {
        let t = g.tensor_mut("output_norm.weight");
        t.dims = vec![1 << 62];
        t.type_id = tt::I8;
    });
    reject_bytes("dim-2e62-i8.gguf", &b, Level::Gguf, &["output_norm.weight", "past the end|too large"]);
    // More than i64::MAX elements in one dimension.
    let b = tiny_with(|g| {
        let t = g.tensor_mut("output_norm.weight");
        t.dims = vec![(1 << 63) + 1];
        t.type_id = tt::I8;
    });
    reject_bytes("dim-2e63-i8.gguf", &b, Level::Gguf, &["output_norm.weight", "too large|overflow"]);
    // Two dimensions whose product overflows.
    let b = tiny_with(|g| {
        let t = g.tensor_mut("output_norm.weight");
        t.dims = vec![1 << 40, 1 << 40];
        t.type_id = tt::I8;
    });
    reject_bytes("dim-product.gguf", &b, Level::Gguf, &["output_norm.weight", "overflow|too large|past the end"]);
}

#[test]
fn absurd_array_length_in_metadata() {
    // An array of u8 that claims 2^60 elements, then a little data.
    let mut raw = Vec::new();
    put_u32(&mut raw, vt::U8);
    put_u64(&mut raw, 1 << 60);
    raw.extend([7u8; 16]);
    let b = tiny_with(|g| {
        g.set("general.huge_array", Value::Raw(vt::ARRAY, raw.clone()));
    });
    reject_bytes("array-2e60.gguf", &b, Level::Gguf, &["truncated|absurd|too large|length"]);
    // The token list itself claims 2^60 strings.
    let mut raw = Vec::new();
    put_u32(&mut raw, vt::STRING);
    put_u64(&mut raw, 1 << 60);
    put_str(&mut raw, "a");
    let b = tiny_with(|g| {
        g.set("tokenizer.ggml.tokens", Value::Raw(vt::ARRAY, raw.clone()));
    });
    reject_bytes("tokens-2e60.gguf", &b, Level::Gguf, &["truncated|absurd|too large|length"]);
}

#[test]
fn absurd_string_length() {
    // A value string of 2^60 bytes.
    let b = tiny_with(|g| {
        g.set("general.name", Value::Raw(vt::STRING, u64_le(1 << 60)));
    });
    reject_bytes("string-2e60.gguf", &b, Level::Gguf, &["string|truncated|absurd"]);
    // 512 MiB: under the parser's cap, far past the end of the file.
    let b = tiny_with(|g| {
        g.set("general.name", Value::Raw(vt::STRING, u64_le(1 << 29)));
    });
    reject_bytes("string-512m.gguf", &b, Level::Gguf, &["string|truncated|absurd"]);
    // A key of 2^60 bytes.
    let mut g = tiny_llama();
    g.raw_kv(u64_le(1 << 60));
    reject_bytes("key-2e60.gguf", &g.build().0, Level::Gguf, &["string|truncated|absurd"]);
    // A tensor name of 2^62 bytes.
    let (mut bytes, l) = tiny_llama().build();
    bytes[l.table_start..l.table_start + 8].copy_from_slice(&u64_le(1 << 62));
    reject_bytes("tensor-name-2e62.gguf", &bytes, Level::Gguf, &["string|truncated|absurd"]);
}

#[test]
fn absurd_counts_in_the_header() {
    let mut g = tiny_llama();
    g.n_kv_override = Some(1 << 60);
    reject_bytes("n-kv-2e60.gguf", &g.build().0, Level::Gguf, &["truncated|absurd|too many|malformed header"]);
    let mut g = tiny_llama();
    g.n_tensors_override = Some(1 << 60);
    reject_bytes("n-tensors-2e60.gguf", &g.build().0, Level::Gguf, &["truncated|absurd|too many|malformed header"]);
}

#[test]
fn unknown_metadata_value_type() {
    for id in [13u32, 1000, u32::MAX] {
        let b = tiny_with(|g| {
            g.set("general.mystery", Value::Raw(id, vec![0; 8]));
        });
        reject_bytes(&format!("value-type-{id}.gguf"), &b, Level::Gguf, &["type"]);
    }
    // An array of arrays (not allowed by the parser).
    let mut raw = Vec::new();
    put_u32(&mut raw, vt::ARRAY);
    put_u64(&mut raw, 1);
    let b = tiny_with(|g| {
        g.set("general.nested", Value::Raw(vt::ARRAY, raw.clone()));
    });
    reject_bytes("nested-array.gguf", &b, Level::Gguf, &["type|array"]);
}

#[test]
fn bad_alignment() {
    // 48 is a multiple of 8 but not a power of two.
    let b = tiny_with(|g| {
        g.set("general.alignment", Value::U32(48));
    });
    reject_bytes("alignment-48.gguf", &b, Level::Gguf, &["alignment"]);
}

#[test]
fn duplicated_tensor_name() {
    let b = tiny_with(|g| {
        let t = g.tensor_mut("output_norm.weight").clone();
        g.tensors.push(t);
    });
    reject_bytes("dup-tensor.gguf", &b, Level::Gguf, &["output_norm.weight", "twice|duplicate"]);
}

#[test]
fn a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("model-dir.gguf");
    std::fs::create_dir(&d).unwrap();
    assert_rejected(&d, Level::Gguf, &["directory"]);
}

#[test]
fn a_nonexistent_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no-such-model.gguf");
    assert_rejected(&p, Level::Gguf, &["no such|not found|does not exist"]);
}

// ------------------------------------------------------------------ the model

#[test]
fn missing_required_tensor() {
    let name = blk(1, "ffn_down.weight");
    let b = tiny_with(|g| {
        g.remove_tensor(&name);
    });
    reject_bytes("missing-tensor.gguf", &b, Level::Model, &[&name, "missing"]);
    let b = tiny_with(|g| {
        g.remove_tensor("token_embd.weight");
    });
    reject_bytes("missing-embd.gguf", &b, Level::Model, &["token_embd.weight", "missing"]);
}

#[test]
fn wrong_tensor_shape() {
    let name = blk(0, "attn_q.weight");
    // Same byte size, transposed-like shape.
    let b = tiny_with(|g| g.tensor_mut(&name).dims = vec![tiny::N_EMBD / 2, tiny::N_EMBD * 2]);
    reject_bytes("wrong-shape.gguf", &b, Level::Model, &[&name, "shape"]);
    // Fewer elements.
    let b = tiny_with(|g| {
        let t = g.tensor_mut("output_norm.weight");
        t.dims = vec![tiny::N_EMBD / 2];
        t.data.truncate(t.data.len() / 2);
    });
    reject_bytes("short-norm.gguf", &b, Level::Model, &["output_norm.weight", "shape"]);
}

#[test]
fn extra_unexpected_tensor() {
    let b = tiny_with(|g| {
        g.tensor("blk.2.attn_q.weight", tt::F32, &[4], f32_bytes(&[0.0; 4]));
    });
    reject_bytes("extra-tensor.gguf", &b, Level::Model, &["blk.2.attn_q.weight", "not used|unexpected|unknown"]);
}

#[test]
fn missing_general_architecture() {
    let b = tiny_with(|g| {
        g.remove("general.architecture");
    });
    reject_bytes("no-arch.gguf", &b, Level::Model, &["general.architecture", "missing"]);
}

#[test]
fn unsupported_architecture() {
    let b = tiny_with(|g| {
        g.set("general.architecture", Value::str("mamba9"));
    });
    reject_bytes("mamba9.gguf", &b, Level::Model, &["mamba9", "unsupported", "supported", "llama"]);
}

#[test]
fn wrong_metadata_types() {
    let cases: &[(&str, Value, &str)] = &[
        ("llama.block_count", Value::str("two"), "block-count-str"),
        ("llama.embedding_length", Value::F32(64.0), "embd-f32"),
        ("llama.attention.head_count", Value::I32(-4), "heads-negative"),
        ("general.architecture", Value::U32(1), "arch-u32"),
        ("tokenizer.ggml.tokens", Value::U32(300), "tokens-u32"),
        ("tokenizer.ggml.merges", Value::i32s(&[1, 2]), "merges-i32"),
        ("tokenizer.ggml.bos_token_id", Value::str("0"), "bos-str"),
    ];
    for (key, v, name) in cases {
        let b = tiny_with(|g| {
            g.set(key, v.clone());
        });
        reject_bytes(&format!("{name}.gguf"), &b, Level::Model, &[key, "expected|invalid|must"]);
    }
}

#[test]
fn missing_or_inconsistent_hparams() {
    let b = tiny_with(|g| {
        g.remove("llama.attention.head_count");
    });
    reject_bytes("no-heads.gguf", &b, Level::Model, &["llama.attention.head_count", "missing"]);
    let b = tiny_with(|g| {
        g.set("llama.attention.head_count_kv", Value::U32(3));
    });
    reject_bytes("kv-heads-3.gguf", &b, Level::Model, &["head_count_kv", "multiple"]);
    let b = tiny_with(|g| {
        g.set("llama.block_count", Value::U32(0));
    });
    reject_bytes("no-layers.gguf", &b, Level::Model, &["llama.block_count", "range"]);
    let b = tiny_with(|g| {
        g.set("llama.vocab_size", Value::U32(tiny::N_VOCAB as u32 + 1));
    });
    reject_bytes("vocab-size.gguf", &b, Level::Model, &["vocab"]);
}

#[test]
fn broken_tokenizer_metadata_names_the_file() {
    let b = tiny_with(|g| {
        g.remove("tokenizer.ggml.merges");
    });
    reject_bytes("no-merges.gguf", &b, Level::Model, &["tokenizer.ggml.merges"]);
    let b = tiny_with(|g| {
        g.set("tokenizer.ggml.model", Value::str("bert9"));
    });
    reject_bytes("tok-model.gguf", &b, Level::Model, &["tokenizer.ggml.model", "bert9"]);
    let b = tiny_with(|g| {
        g.set("tokenizer.ggml.eos_token_id", Value::U32(5000));
    });
    reject_bytes("eos-range.gguf", &b, Level::Model, &["tokenizer.ggml.eos_token_id", "5000"]);
}

/// A norm weight stored as a quantized type has the right shape but a type
/// the graph cannot use (ggml's element-wise multiply aborts on it): the
/// loader must refuse it. If it loads, a forward pass in a child process
/// shows what happens next.
#[test]
fn wrong_tensor_type_for_its_use() {
    let name = "output_norm.weight";
    let b = tiny_with(|g| {
        let t = g.tensor_mut(name);
        t.type_id = tt::Q8_0; // 64 elements = 2 blocks of 34 bytes
        t.data = vec![0; 68];
    });
    let f = test_file("norm-q8_0.gguf", &b);
    if let Ok(m) = load(&f.path, false) {
        drop(m);
        let child = forward_in_child(&f.path);
        panic!(
            "Model::load accepted {name} stored as q8_0 (an element-wise weight must be f32); \
             a forward pass on it then ends with: {child}"
        );
    }
    assert_rejected(&f.path, Level::Model, &[name, "type|q8_0"]);
}

// ------------------------------------------------------------ child process

const CHILD_ENV: &str = "DECACHE_GGUF_BAD_CHILD_MODEL";

/// Not a test of its own: the body of `forward_in_child`, run in a child
/// process so that an abort cannot take the test harness down.
#[test]
#[ignore = "run by forward_in_child only"]
fn child_forward_pass() {
    let Some(p) = std::env::var_os(CHILD_ENV) else { return };
    let m = Arc::new(load(Path::new(&p), false).expect("child: load"));
    let cfg = decache::session::SessionConfig { n_ctx: 32, n_threads: 1, ..Default::default() };
    let mut s = decache::session::Session::new(m, cfg).expect("child: session");
    let logits = s.eval(&[1, 2, 3], false).expect("child: eval");
    eprintln!("child: {} logits", logits.len());
}

/// Runs a forward pass on `path` in a child process; describes how it ended.
fn forward_in_child(path: &Path) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child_forward_pass", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, path)
        .output()
        .expect("spawn child");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // ggml's own message (GGML_ASSERT / GGML_ABORT), else the last lines.
    let ggml: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("GGML") || l.contains("ggml/src/") || l.contains("panicked"))
        .take(4)
        .collect();
    let tail = if ggml.is_empty() {
        stderr.lines().rev().take(8).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    } else {
        ggml.join("\n")
    };
    match (out.status.code(), out.status.signal()) {
        (_, Some(sig)) => format!("signal {sig} (abort/crash); stderr tail:\n{tail}"),
        (Some(0), _) => "success".into(),
        (Some(c), _) => format!("exit code {c}; stderr tail:\n{tail}"),
        _ => "unknown status".into(),
    }
}

// ------------------------------------------------------------------- sweeps

/// Cuts the tiny model at many lengths: every cut must be rejected (the
/// writer leaves no trailing padding, so no prefix is a valid file) with an
/// error that names the file.
#[test]
fn truncation_sweep_is_always_an_error() {
    let (bytes, layout) = tiny_llama().build();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-cut.gguf");
    // Dense cuts through the header (every field), then 40 through the data.
    let mut rng = Rng::new(42);
    let mut cuts = Vec::new();
    let mut cut = 0;
    while cut < layout.data_start {
        cuts.push(cut);
        cut += 1 + rng.below(40);
    }
    cuts.extend((0..40).map(|i| layout.data_start + (bytes.len() - layout.data_start) * i / 40 + rng.below(64)));
    cuts.push(bytes.len() - 1);
    for (n, &cut) in cuts.iter().enumerate() {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        match load(&path, n % 2 == 1) {
            Ok(_) => panic!("a file cut at {cut} of {} bytes loaded", bytes.len()),
            Err(e) => assert_names(&format!("cut at {cut}"), &e.to_string(), &path, &[]),
        }
    }
    assert!(cuts.len() > 150, "only {} cuts", cuts.len());
}

/// One corrupted variant of the tiny model per seed: 1 to 3 bytes of the
/// header (metadata and tensor table) overwritten. Odd seeds aim at the
/// tensor table and the fixed 24-byte header, where every byte is a count,
/// a size, a type or an offset. Returns the bytes and a description.
fn corrupt_header(clean: &[u8], layout: &Layout, seed: u64) -> (Vec<u8>, String) {
    let mut rng = Rng::new(seed);
    let mut b = clean.to_vec();
    let lo = if seed.is_multiple_of(2) { 0 } else { layout.table_start };
    let mut what = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let at =
            if seed % 2 == 1 && rng.below(4) == 0 { rng.below(24) } else { lo + rng.below(layout.data_start - lo) };
        let v = match rng.below(4) {
            0 => 0xFF,
            1 => 0x00,
            2 => b[at] ^ (1 << rng.below(8)),
            _ => rng.next_u64() as u8,
        };
        what.push(format!("[{at}] {:#04x}->{v:#04x}", b[at]));
        b[at] = v;
    }
    (b, format!("seed {seed}: {}", what.join(", ")))
}

const SWEEP_SEEDS: u64 = 240;

/// Every corrupted variant: `GgufFile::open` and `Model::load` return (Ok or
/// Err), never panic (a panic fails this test) or abort (an abort kills it).
/// Every 8th variant also goes through `decache info`: an exit code, never
/// a signal or a panic message, and success exactly when the library loads it.
#[test]
fn header_corruption_sweep_never_panics() {
    let (clean, layout) = tiny_llama().build();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-corrupt.gguf");
    let start = std::time::Instant::now();
    let (mut n_ok, mut n_err) = (0, 0);
    for seed in 0..SWEEP_SEEDS {
        let (b, what) = corrupt_header(&clean, &layout, seed);
        std::fs::write(&path, &b).unwrap();
        let no_mmap = seed % 3 == 0;
        let _ = GgufFile::open(&path, no_mmap);
        let loaded = load(&path, no_mmap);
        if loaded.is_ok() {
            n_ok += 1
        } else {
            n_err += 1
        }
        if seed % 8 == 0 {
            let (status, _, stderr) = cli_info(&path);
            assert_eq!(status.signal(), None, "{what}: decache info killed by a signal:\n{stderr}");
            assert!(!stderr.contains("panicked"), "{what}: decache info panicked:\n{stderr}");
            assert_eq!(
                status.success(),
                loaded.is_ok(),
                "{what}: decache info and Model::load disagree ({status:?}, {:?}):\n{stderr}",
                loaded.err().map(|e| e.to_string())
            );
        }
    }
    eprintln!("header corruption sweep: {n_ok} loaded, {n_err} rejected in {:.1?}", start.elapsed());
    assert!(
        n_err > SWEEP_SEEDS / 4,
        "only {n_err} of {SWEEP_SEEDS} corruptions were rejected: is the sweep reaching the header?"
    );
}

/// Every error of the same sweep names the file.
#[test]
fn header_corruption_sweep_errors_name_the_file() {
    let (clean, layout) = tiny_llama().build();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny-corrupt.gguf");
    let p = path.display().to_string();
    let mut unnamed = Vec::new();
    for seed in 0..SWEEP_SEEDS {
        let (b, what) = corrupt_header(&clean, &layout, seed);
        std::fs::write(&path, &b).unwrap();
        let errors = [
            GgufFile::open(&path, false).err().map(|e| e.to_string()),
            load(&path, false).err().map(|e| e.to_string()),
        ];
        for msg in errors.into_iter().flatten() {
            if !msg.contains(&p) {
                unnamed.push(format!("{what}: {msg}"));
            }
        }
    }
    assert!(
        unnamed.is_empty(),
        "{} errors do not name the file {p}, e.g.:\n{}",
        unnamed.len(),
        unnamed.iter().take(8).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn unsupported_rope_scaling_is_refused() {
    let mut g = tiny_llama();
    // YaRN is supported now; a scaling type llama.cpp does not know is not.
    g.set("llama.rope.scaling.type", Value::str("dynamic")).set("llama.rope.scaling.factor", Value::F32(4.0));
    let (bytes, _) = g.build();
    reject_bytes("rope-dynamic.gguf", &bytes, Level::Model, &["rope.scaling.type", "dynamic", "yarn"]);
}

#[test]
fn a_model_whose_chat_template_loops_or_reads_files_is_stopped() {
    let cases = [
        ("{% for a in range(100000) %}{% for b in range(100000) %}x{% endfor %}{% endfor %}", "ran too long"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "template"),
        ("{% include '/etc/passwd' %}", "template"),
        ("{% extends '../../../../etc/hostname' %}", "template"),
    ];
    for (i, (tpl, want)) in cases.iter().enumerate() {
        let bytes = tiny_with(|g| {
            g.set("tokenizer.chat_template", Value::str(tpl));
        });
        let f = test_file(&format!("hostile-template-{i}.gguf"), &bytes);
        let t0 = std::time::Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_decache"))
            .args(["run", "--chat", "-p", "hello", "-n", "2", "-t", "1", "-m"])
            .arg(&f.path)
            .output()
            .expect("run decache");
        let took = t0.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(took < std::time::Duration::from_secs(30), "{tpl}: took {took:?}");
        assert_eq!(out.status.signal(), None, "{tpl}: killed by a signal:\n{stderr}");
        assert!(!matches!(out.status.code(), Some(0) | Some(101)), "{tpl}: exit {:?}:\n{stderr}", out.status.code());
        assert!(stderr.contains("error") && stderr.contains(want), "{tpl}: {stderr}");
        assert!(!stderr.contains("root:"), "{tpl}: a file's contents came out:\n{stderr}");
    }
}

/// The tiny model with its feed-forward width raised to 2^26: 96 GiB of
/// weights, written as a sparse file (the data is a hole, no disk used).
fn huge_sparse_model(path: &Path) -> u64 {
    const N_FF: u64 = 1 << 26;
    let mut g = tiny_llama();
    g.set("llama.feed_forward_length", Value::U32(N_FF as u32));
    let mut cursor = 0u64;
    for t in &mut g.tensors {
        if t.name.contains("ffn_gate") || t.name.contains("ffn_up") {
            t.dims[1] = N_FF;
        } else if t.name.contains("ffn_down") {
            t.dims[0] = N_FF;
        }
        t.data.clear();
        t.offset = Some(cursor);
        cursor = align_up((cursor + 4 * t.dims.iter().product::<u64>()) as usize, g.alignment) as u64;
    }
    let (header, layout) = g.build();
    std::fs::write(path, header).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(layout.data_start as u64 + cursor).unwrap();
    cursor
}

#[test]
fn a_model_whose_weights_do_not_fit_in_memory_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.gguf");
    let bytes = huge_sparse_model(&path);
    assert!(bytes > 90 << 30);
    // Read into memory (--no-mmap), 96 GiB cannot fit on this machine: the
    // error says what it needs and what there is, before allocating.
    let t0 = std::time::Instant::now();
    let e = load(&path, true).err().expect("a 96 GiB --no-mmap load was accepted").to_string();
    assert!(t0.elapsed() < std::time::Duration::from_secs(10), "took {:?}", t0.elapsed());
    assert_names("Model::load(no_mmap)", &e, &path, &["98304 MiB of memory", "--no-mmap", "MiB are available"]);
    let o = Command::new(env!("CARGO_BIN_EXE_decache"))
        .args(["run", "-m", path.to_str().unwrap(), "--no-mmap", "-p", "hi", "-n", "1"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && o.status.signal().is_none(), "{err}");
    assert!(err.contains("98304 MiB of memory") && err.contains("huge.gguf"), "{err}");
}
