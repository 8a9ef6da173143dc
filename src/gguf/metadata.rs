//! Typed access to GGUF metadata. A wrong type is an error naming the key;
//! an absent key is `Ok(None)`.
use super::GgufError;
use super::GgufFile;
use serde_json::Value;

impl GgufFile {
    fn meta_err(&self, key: &str, msg: impl Into<String>) -> GgufError {
        GgufError::Metadata { path: self.path.clone(), key: key.to_string(), msg: msg.into() }
    }

    pub fn has(&self, key: &str) -> bool {
        self.metadata.contains_key(key)
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.meta_err(key, format!("expected a string, found {}", kind(v)))),
        }
    }

    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(Some)
                .ok_or_else(|| self.meta_err(key, format!("expected a non-negative integer, found {}", kind(v)))),
        }
    }

    /// A u32 value (any integer type in range).
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        match self.get_u64(key)? {
            None => Ok(None),
            Some(v) => u32::try_from(v).map(Some).map_err(|_| self.meta_err(key, format!("value {v} is out of range"))),
        }
    }

    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(v) => match v.as_f64() {
                Some(f) if f.is_finite() => Ok(Some(f as f32)),
                _ => Err(self.meta_err(key, format!("expected a finite number, found {}", kind(v)))),
            },
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.meta_err(key, format!("expected a bool, found {}", kind(v)))),
        }
    }

    fn get_arr(&self, key: &str) -> Result<Option<&Vec<Value>>, GgufError> {
        match self.metadata.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.meta_err(key, format!("expected an array, found {}", kind(v)))),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<String>>, GgufError> {
        let Some(a) = self.get_arr(key)? else { return Ok(None) };
        a.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| self.meta_err(key, format!("element {i}: expected a string, found {}", kind(v))))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn get_i64_array(&self, key: &str) -> Result<Option<Vec<i64>>, GgufError> {
        let Some(a) = self.get_arr(key)? else { return Ok(None) };
        a.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_i64()
                    .ok_or_else(|| self.meta_err(key, format!("element {i}: expected an integer, found {}", kind(v))))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// An array of bools or integers (as 0/1 and the integers); `None` when
    /// the key is absent or not an array.
    pub fn get_bool_or_int_array(&self, key: &str) -> Result<Option<Vec<i64>>, GgufError> {
        let Some(Value::Array(a)) = self.metadata.get(key) else { return Ok(None) };
        a.iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Bool(b) => Ok(i64::from(*b)),
                v => v.as_i64().ok_or_else(|| {
                    self.meta_err(key, format!("element {i}: expected a bool or an integer, found {}", kind(v)))
                }),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    pub fn get_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>, GgufError> {
        let Some(a) = self.get_arr(key)? else { return Ok(None) };
        a.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f64()
                    .map(|f| f as f32)
                    .ok_or_else(|| self.meta_err(key, format!("element {i}: expected a number, found {}", kind(v))))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// A per-layer value that may be stored as a scalar or as an array of
    /// `n_layer` entries (llama.cpp accepts both).
    pub fn get_u32_per_layer(&self, key: &str, n_layer: usize) -> Result<Option<Vec<u32>>, GgufError> {
        if let Some(Value::Array(_)) = self.metadata.get(key) {
            let a = self.get_i64_array(key)?.unwrap_or_default();
            if a.len() != n_layer {
                return Err(self.meta_err(key, format!("has {} entries, expected one per layer ({n_layer})", a.len())));
            }
            return a
                .into_iter()
                .map(|v| u32::try_from(v).map_err(|_| self.meta_err(key, format!("value {v} is out of range"))))
                .collect::<Result<Vec<_>, _>>()
                .map(Some);
        }
        Ok(self.get_u32(key)?.map(|v| vec![v; n_layer]))
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
