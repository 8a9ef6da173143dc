//! Memory-mapped GGUF files: typed metadata, a validated tensor table, and
//! tensor data used in place from the mapping (zero copy) or read on demand
//! (`--no-mmap`).
//!
//! The header is read by `reader` with every count checked against the bytes
//! left; sizes, offsets and types are then checked here against ggml's own
//! type traits and the file's length, so that nothing malformed ever reaches
//! ggml (which would abort).

mod error;
mod metadata;
mod reader;
mod tensor;
mod vocab;

pub use error::GgufError;
pub use tensor::TensorInfo;

use crate::ggml::GgmlType;
use serde_json::Value;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Most tensors a model file may declare (llama.cpp's models have a few
/// thousand at most); guards against absurd counts.
const MAX_TENSORS: usize = 1 << 20;

/// An opened, validated GGUF file.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub file_size: u64,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    map: Option<std::sync::Arc<memmap2::Mmap>>,
}

impl GgufFile {
    /// Open and validate `path`; map it into memory unless `no_mmap`.
    pub fn open(path: &Path, no_mmap: bool) -> Result<GgufFile, GgufError> {
        let path = path.to_path_buf();
        let open_err = |source| GgufError::Open { path: path.clone(), source };
        let mut file = File::open(&path).map_err(open_err)?;
        let file_size = file.metadata().map_err(open_err)?.len();
        if file.metadata().map_err(open_err)?.is_dir() {
            return Err(GgufError::Open { path, source: std::io::Error::other("is a directory") });
        }
        let mut head = [0u8; 8];
        let got = read_up_to(&mut file, &mut head).map_err(|source| GgufError::Read { path: path.clone(), source })?;
        if got >= 4 && &head[..4] != b"GGUF" {
            return Err(GgufError::BadMagic { path, magic: String::from_utf8_lossy(&head[..4]).into_owned() });
        }
        if got < 8 || file_size < 24 {
            return Err(GgufError::TooSmall { path, size: file_size });
        }
        let version = u32::from_le_bytes(head[4..8].try_into().unwrap());
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version { path, version });
        }
        drop(file);

        let header = |msg: String| GgufError::Header { path: path.clone(), msg };
        let f = File::open(&path).map_err(|source| GgufError::Open { path: path.clone(), source })?;
        let parsed = reader::read_header(f, file_size).map_err(header)?;
        let alignment = match parsed.metadata.get("general.alignment") {
            None => 32,
            Some(v) => v
                .as_u64()
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| header(format!("general.alignment {v} is not a power of two")))?,
        };
        let data_offset = parsed.header_end.div_ceil(alignment) * alignment;
        if data_offset > file_size {
            return Err(header(format!(
                "tensor data starts at byte {data_offset}, past the end of the file ({file_size} bytes): truncated?"
            )));
        }
        if parsed.tensors.len() > MAX_TENSORS {
            return Err(header(format!("{} tensors declared (at most {MAX_TENSORS} supported)", parsed.tensors.len())));
        }

        let mut tensors = Vec::with_capacity(parsed.tensors.len());
        let mut by_name = HashMap::new();
        for t in parsed.tensors {
            let terr = |msg: String| GgufError::Tensor { path: path.clone(), tensor: t.name.clone(), msg };
            let typ = GgmlType::from_id(t.type_id)
                .ok_or_else(|| terr(format!("unknown or unsupported ggml type id {}", t.type_id)))?;
            let mut ne = [1i64; 4];
            for (i, &d) in t.dims.iter().enumerate() {
                ne[i] = i64::try_from(d).map_err(|_| terr(format!("dimension {i} = {d} is too large")))?;
            }
            let nbytes = tensor::tensor_nbytes(typ, &ne).map_err(&terr)?;
            if t.offset % alignment != 0 {
                return Err(terr(format!("data offset {} is not aligned to {alignment} bytes", t.offset)));
            }
            let start = data_offset.checked_add(t.offset).ok_or_else(|| terr("data offset overflows".into()))?;
            let end = start.checked_add(nbytes).ok_or_else(|| terr("data end overflows".into()))?;
            if end > file_size {
                return Err(terr(format!(
                    "data [{start}, {end}) lies past the end of the file ({file_size} bytes): truncated or corrupt offset"
                )));
            }
            if by_name.insert(t.name.clone(), tensors.len()).is_some() {
                return Err(terr("appears twice in the tensor table".into()));
            }
            tensors.push(TensorInfo { name: t.name, typ, ne, n_dims: t.dims.len() as u32, offset: start, nbytes });
        }

        let map = if no_mmap {
            None
        } else {
            let f = File::open(&path).map_err(|source| GgufError::Open { path: path.clone(), source })?;
            // SAFETY: the mapping is read-only; a model file modified while
            // mapped is outside what any runner (llama.cpp included) guards.
            Some(std::sync::Arc::new(
                crate::ggml::map_file_readonly(&f).map_err(|source| GgufError::Read { path: path.clone(), source })?,
            ))
        };
        Ok(GgufFile { path, version, file_size, metadata: parsed.metadata, tensors, by_name, map })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }

    /// Whether tensor data is memory-mapped.
    pub fn is_mapped(&self) -> bool {
        self.map.is_some()
    }

    /// The shared mapping of the whole file, when mapped.
    pub fn mapping(&self) -> Option<std::sync::Arc<memmap2::Mmap>> {
        self.map.clone()
    }

    /// The bytes of one tensor: borrowed from the mapping, or read from disk.
    pub fn tensor_bytes(&self, t: &TensorInfo) -> Result<Cow<'_, [u8]>, GgufError> {
        if let Some(m) = &self.map {
            return Ok(Cow::Borrowed(&m[t.offset as usize..(t.offset + t.nbytes) as usize]));
        }
        use std::io::{Seek, SeekFrom};
        let rerr = |source| GgufError::Read { path: self.path.clone(), source };
        let mut f = File::open(&self.path).map_err(rerr)?;
        f.seek(SeekFrom::Start(t.offset)).map_err(rerr)?;
        let mut buf = vec![0u8; t.nbytes as usize];
        f.read_exact(&mut buf).map_err(rerr)?;
        Ok(Cow::Owned(buf))
    }

    /// The architecture name (`general.architecture`).
    pub fn architecture(&self) -> Result<&str, GgufError> {
        self.get_str("general.architecture")?.ok_or_else(|| GgufError::Metadata {
            path: self.path.clone(),
            key: "general.architecture".into(),
            msg: "missing (required)".into(),
        })
    }

    /// Total number of weights (elements) over all tensors.
    /// A short identity of the file's contents: SHA-256 over its size, its
    /// first MiB (header, metadata, tensor table) and 16 samples of 4 KiB
    /// spread over the tensor data. Cheap, and different for files that
    /// differ in weights, quantization or vocabulary.
    pub fn fingerprint(&self) -> Result<String, GgufError> {
        use sha2::{Digest, Sha256};
        use std::io::{Seek, SeekFrom};
        let err = |source| GgufError::Open { path: self.path.clone(), source };
        let mut f = File::open(&self.path).map_err(err)?;
        let mut h = Sha256::new();
        h.update(self.file_size.to_le_bytes());
        let mut buf = vec![0u8; (1 << 20).min(self.file_size as usize)];
        f.read_exact(&mut buf).map_err(err)?;
        h.update(&buf);
        let sample = 4096u64.min(self.file_size);
        for i in 0..16u64 {
            let at = (self.file_size - sample) * i / 15;
            f.seek(SeekFrom::Start(at)).map_err(err)?;
            let mut b = vec![0u8; sample as usize];
            f.read_exact(&mut b).map_err(err)?;
            h.update(&b);
        }
        Ok(h.finalize()[..16].iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn n_params(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::n_elements).sum()
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
