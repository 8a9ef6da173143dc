//! A streaming reader of the GGUF header (metadata and tensor table).
//!
//! Every count and length is checked against the bytes the file still has
//! before anything is allocated, so absurd values are reported at once with
//! the key or tensor they belong to; nothing here can panic or over-allocate.
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufReader, Read};

/// One tensor-table entry as written in the file (checked later).
pub(crate) struct RawTensor {
    pub name: String,
    pub dims: Vec<u64>,
    pub type_id: u32,
    pub offset: u64,
}

pub(crate) struct RawHeader {
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<RawTensor>,
    /// Byte offset where the tensor table ends (before alignment padding).
    pub header_end: u64,
}

const MAX_DIMS: u32 = 4;

struct Src<R: Read> {
    r: BufReader<R>,
    pos: u64,
    len: u64,
}

impl<R: Read> Src<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<Vec<u8>, String> {
        if n > self.remaining() {
            return Err(format!(
                "{}: {n} bytes declared at byte {} but the file has only {} left (truncated or corrupt)",
                what(),
                self.pos,
                self.remaining()
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.r.read_exact(&mut buf).map_err(|e| format!("{}: read error at byte {}: {e}", what(), self.pos))?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], String> {
        let v = self.bytes(N as u64, what)?;
        Ok(v.try_into().expect("length checked"))
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, String> {
        let n = self.u64(what)?;
        let b = self.bytes(n, what)?;
        String::from_utf8(b)
            .map_err(|e| format!("{}: not valid UTF-8 (byte {} of the string)", what(), e.utf8_error().valid_up_to()))
    }
}

/// Bytes one element of value type `t` takes at least (strings: their length field).
fn min_size(t: u32) -> Option<u64> {
    Some(match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10 | 11 | 12 => 8,
        9 => 12,
        _ => return None,
    })
}

fn type_name(t: u32) -> &'static str {
    ["u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64"]
        .get(t as usize)
        .copied()
        .unwrap_or("unknown")
}

fn scalar<R: Read>(s: &mut Src<R>, t: u32, what: &dyn Fn() -> String) -> Result<Value, String> {
    Ok(match t {
        0 => Value::from(s.array::<1>(what)?[0]),
        1 => Value::from(s.array::<1>(what)?[0] as i8),
        2 => Value::from(u16::from_le_bytes(s.array(what)?)),
        3 => Value::from(i16::from_le_bytes(s.array(what)?)),
        4 => Value::from(u32::from_le_bytes(s.array(what)?)),
        5 => Value::from(i32::from_le_bytes(s.array(what)?)),
        6 => Value::from(f32::from_le_bytes(s.array(what)?) as f64),
        7 => match s.array::<1>(what)?[0] {
            0 => Value::Bool(false),
            1 => Value::Bool(true),
            b => return Err(format!("{}: bool byte is {b} (0 or 1 expected)", what())),
        },
        8 => Value::from(s.string(what)?),
        10 => Value::from(s.u64(what)?),
        11 => Value::from(i64::from_le_bytes(s.array(what)?)),
        12 => Value::from(f64::from_le_bytes(s.array(what)?)),
        _ => return Err(format!("{}: unknown value type {t}", what())),
    })
}

/// Parse the header of a GGUF stream of `len` bytes (magic already checked). Errors are plain messages naming the key or tensor.
pub(crate) fn read_header<R: Read>(r: R, len: u64) -> Result<RawHeader, String> {
    let mut s = Src { r: BufReader::with_capacity(1 << 20, r), pos: 0, len };
    s.bytes(4, &|| "magic".into())?;
    s.u32(&|| "version".into())?;
    let n_tensors = s.u64(&|| "tensor count".into())?;
    let n_kv = s.u64(&|| "metadata count".into())?;
    // A key/value takes at least 13 bytes; a tensor entry at least 28.
    if n_kv > s.remaining() / 13 {
        return Err(format!(
            "metadata count {n_kv} cannot fit in the {} bytes that follow (truncated file or corrupt count)",
            s.remaining()
        ));
    }
    if n_tensors > s.remaining() / 28 {
        return Err(format!(
            "tensor count {n_tensors} cannot fit in the {} bytes that follow (truncated file or corrupt count)",
            s.remaining()
        ));
    }
    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let key = s.string(&|| format!("metadata entry {i}: key"))?;
        let what = || format!("metadata key '{key}'");
        let t = s.u32(&what)?;
        let v = if t == 9 {
            let et = s.u32(&what)?;
            let n = s.u64(&what)?;
            let Some(min) = min_size(et) else { return Err(format!("{}: array of unknown element type {et}", what())) };
            if et == 9 {
                return Err(format!("{}: arrays of arrays are not supported", what()));
            }
            if n > s.remaining() / min {
                return Err(format!(
                    "{}: array of {n} {} elements cannot fit in the {} bytes left (truncated file or corrupt length)",
                    what(),
                    type_name(et),
                    s.remaining()
                ));
            }
            let mut items = Vec::with_capacity(n as usize);
            for j in 0..n {
                let w = || format!("metadata key '{key}' element {j}");
                items.push(scalar(&mut s, et, &w)?);
            }
            Value::Array(items)
        } else {
            scalar(&mut s, t, &what)?
        };
        metadata.insert(key, v);
    }
    let mut tensors = Vec::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let name = s.string(&|| format!("tensor entry {i}: name"))?;
        let what = || format!("tensor '{name}'");
        let n_dims = s.u32(&what)?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(format!("{}: {n_dims} dimensions (1 to {MAX_DIMS} supported)", what()));
        }
        let dims = (0..n_dims).map(|_| s.u64(&what)).collect::<Result<Vec<_>, _>>()?;
        let type_id = s.u32(&what)?;
        let offset = s.u64(&what)?;
        tensors.push(RawTensor { name, dims, type_id, offset });
    }
    Ok(RawHeader { metadata, tensors, header_end: s.pos })
}
