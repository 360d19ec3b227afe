//! A small reader for GGUF headers (metadata key/values and tensor infos), used to
//! list models, identify a file before llama.cpp sees it, and size memory admission.
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md> (v2/v3).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// GGUF magic: the bytes "GGUF" read as a little-endian u32.
const GGUF_MAGIC: u32 = 0x4655_4747;
/// Metadata value types (gguf.md, `gguf_metadata_value_type`).
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;
/// Sanity bounds so a corrupt header cannot make us allocate gigabytes.
const MAX_STRING_BYTES: u64 = 64 << 20;
const MAX_COUNT: u64 = 1 << 24;

/// Why a file is not a usable GGUF model.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read '{path}': {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("'{path}' is not a GGUF file (magic bytes {magic:#010x}, expected 'GGUF')")]
    NotGguf { path: PathBuf, magic: u32 },
    #[error("'{path}' has unsupported GGUF version {version} (supported: 2, 3)")]
    Version { path: PathBuf, version: u32 },
    #[error("'{path}' is truncated: {what} (file is {file_bytes} bytes)")]
    Truncated {
        path: PathBuf,
        what: String,
        file_bytes: u64,
    },
    #[error("'{path}' has a corrupt GGUF header: {what}")]
    Corrupt { path: PathBuf, what: String },
}

/// A metadata value; arrays keep only their length and element type except for
/// small string arrays (which we never need in full here).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    /// An array: element type and length (contents skipped).
    Array {
        elem_type: u32,
        len: u64,
    },
}

impl MetaValue {
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            MetaValue::Int(v) if *v >= 0 => Some(*v as u64),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// What we learn from a GGUF header.
#[derive(Debug, Clone)]
pub struct GgufInfo {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// All scalar metadata keys.
    pub meta: BTreeMap<String, MetaValue>,
    /// Number of tensors.
    pub n_tensors: u64,
    /// Bytes of tensor data the header says the file holds (end of the last tensor).
    pub data_end_bytes: u64,
    /// Total file size.
    pub file_bytes: u64,
    /// Elements of every tensor together (the weights; bits per weight divide by it).
    pub n_weights: u64,
    /// Bytes of every tensor's data together (by ggml type sizes).
    pub tensor_bytes: u64,
}

impl GgufInfo {
    fn arch_key(&self, suffix: &str) -> Option<&MetaValue> {
        let arch = self.meta.get("general.architecture")?.as_str()?;
        self.meta.get(&format!("{arch}.{suffix}"))
    }
    /// `general.architecture`, e.g. `llama`.
    pub fn arch(&self) -> Option<&str> {
        self.meta.get("general.architecture")?.as_str()
    }
    /// Trained context length.
    pub fn context_length(&self) -> Option<u64> {
        self.arch_key("context_length")?.as_u64()
    }
    pub fn block_count(&self) -> Option<u64> {
        self.arch_key("block_count")?.as_u64()
    }
    pub fn embedding_length(&self) -> Option<u64> {
        self.arch_key("embedding_length")?.as_u64()
    }
    pub fn head_count(&self) -> Option<u64> {
        self.arch_key("attention.head_count")?.as_u64()
    }
    pub fn head_count_kv(&self) -> Option<u64> {
        self.arch_key("attention.head_count_kv")?
            .as_u64()
            .or_else(|| self.head_count())
    }
    /// Vocabulary size (length of `tokenizer.ggml.tokens`).
    pub fn vocab_size(&self) -> Option<u64> {
        match self.meta.get("tokenizer.ggml.tokens")? {
            MetaValue::Array { len, .. } => Some(*len),
            _ => None,
        }
    }
    /// The quantization named by `general.file_type` (llama_ftype), e.g. `Q4_1`.
    pub fn quant(&self) -> Option<&'static str> {
        let ft = self.meta.get("general.file_type")?.as_u64()?;
        Some(ftype_name(ft))
    }
    /// `general.size_label` (e.g. `135M`) when present.
    pub fn size_label(&self) -> Option<&str> {
        self.meta.get("general.size_label")?.as_str()
    }
    /// Whether the file carries a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.meta.contains_key("tokenizer.chat_template")
    }
    /// Tensor data bits per weight (what the quantization costs per parameter).
    pub fn bits_per_weight(&self) -> Option<f64> {
        (self.n_weights > 0 && self.tensor_bytes > 0)
            .then(|| self.tensor_bytes as f64 * 8.0 / self.n_weights as f64)
    }
    /// `edgewatt.quantized_from` (written by `edgewatt quantize`): the source file and
    /// its quantization, e.g. `SmolLM2-135M-Instruct.Q4_1.gguf (Q4_1)`.
    pub fn quantized_from(&self) -> Option<&str> {
        self.meta.get(QUANTIZED_FROM_KEY)?.as_str()
    }
    /// The source when this file was requantized from an already quantized model
    /// (its quality is then not that of a true quantization of its format).
    pub fn requantized_from(&self) -> Option<&str> {
        let from = self.quantized_from()?;
        let src_type = from.rsplit_once(" (")?.1.trim_end_matches(')');
        (!is_float_type(src_type)).then_some(from)
    }
}

/// The metadata key `edgewatt quantize` records the source in.
pub const QUANTIZED_FROM_KEY: &str = "edgewatt.quantized_from";

/// Whether a quantization name is an unquantized float format (a true source).
pub fn is_float_type(name: &str) -> bool {
    matches!(name, "F32" | "F16" | "BF16")
}

/// Names of `llama_ftype` values (llama.h).
pub fn ftype_name(ft: u64) -> &'static str {
    match ft {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        7 => "Q8_0",
        8 => "Q5_0",
        9 => "Q5_1",
        10 => "Q2_K",
        11 => "Q3_K_S",
        12 => "Q3_K_M",
        13 => "Q3_K_L",
        14 => "Q4_K_S",
        15 => "Q4_K_M",
        16 => "Q5_K_S",
        17 => "Q5_K_M",
        18 => "Q6_K",
        19 => "IQ2_XXS",
        20 => "IQ2_XS",
        21 => "Q2_K_S",
        22 => "IQ3_XS",
        23 => "IQ3_XXS",
        24 => "IQ1_S",
        25 => "IQ4_NL",
        26 => "IQ3_S",
        27 => "IQ3_M",
        28 => "IQ2_S",
        29 => "IQ2_M",
        30 => "IQ4_XS",
        31 => "IQ1_M",
        32 => "BF16",
        36 => "TQ1_0",
        37 => "TQ2_0",
        38 => "MXFP4",
        _ => "unknown",
    }
}

/// Bytes per block and elements per block of ggml tensor types (ggml.c type traits);
/// None for types we do not know (the size check is then skipped for that tensor).
fn ggml_type_size(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (4, 1),      // F32
        1 => (2, 1),      // F16
        2 => (18, 32),    // Q4_0
        3 => (20, 32),    // Q4_1
        6 => (22, 32),    // Q5_0
        7 => (24, 32),    // Q5_1
        8 => (34, 32),    // Q8_0
        9 => (36, 32),    // Q8_1
        10 => (84, 256),  // Q2_K
        11 => (110, 256), // Q3_K
        12 => (144, 256), // Q4_K
        13 => (176, 256), // Q5_K
        14 => (210, 256), // Q6_K
        15 => (292, 256), // Q8_K
        24 => (1, 1),     // I8
        25 => (2, 1),     // I16
        26 => (4, 1),     // I32
        27 => (8, 1),     // I64
        28 => (8, 1),     // F64
        30 => (2, 1),     // BF16
        _ => return None,
    })
}

struct Reader<R> {
    r: R,
    pos: u64,
    path: PathBuf,
    file_bytes: u64,
}

impl<R: Read> Reader<R> {
    fn bytes(&mut self, n: usize, what: &str) -> Result<Vec<u8>, GgufError> {
        let mut buf = vec![0u8; n];
        self.r.read_exact(&mut buf).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                GgufError::Truncated {
                    path: self.path.clone(),
                    what: format!("header ends inside {what} at byte {}", self.pos),
                    file_bytes: self.file_bytes,
                }
            } else {
                GgufError::Io {
                    path: self.path.clone(),
                    source: e,
                }
            }
        })?;
        self.pos += n as u64;
        Ok(buf)
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        let b = self.bytes(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }
    fn corrupt(&self, what: String) -> GgufError {
        GgufError::Corrupt {
            path: self.path.clone(),
            what,
        }
    }
    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        if len > MAX_STRING_BYTES {
            return Err(self.corrupt(format!("{what} claims {len} bytes")));
        }
        let b = self.bytes(len as usize, what)?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }
    fn value(&mut self, t: u32, key: &str) -> Result<MetaValue, GgufError> {
        Ok(match t {
            T_U8 => MetaValue::Int(self.bytes(1, key)?[0] as i64),
            T_I8 => MetaValue::Int(self.bytes(1, key)?[0] as i8 as i64),
            T_U16 => {
                let b = self.bytes(2, key)?;
                MetaValue::Int(u16::from_le_bytes([b[0], b[1]]) as i64)
            }
            T_I16 => {
                let b = self.bytes(2, key)?;
                MetaValue::Int(i16::from_le_bytes([b[0], b[1]]) as i64)
            }
            T_U32 => MetaValue::Int(self.u32(key)? as i64),
            T_I32 => MetaValue::Int(self.u32(key)? as i32 as i64),
            T_F32 => MetaValue::Float(f32::from_bits(self.u32(key)?) as f64),
            T_BOOL => MetaValue::Bool(self.bytes(1, key)?[0] != 0),
            T_STRING => MetaValue::Str(self.string(key)?),
            T_U64 => MetaValue::Int(self.u64(key)? as i64),
            T_I64 => MetaValue::Int(self.u64(key)? as i64),
            T_F64 => MetaValue::Float(f64::from_bits(self.u64(key)?)),
            T_ARRAY => {
                let elem_type = self.u32(key)?;
                let len = self.u64(key)?;
                if len > MAX_COUNT {
                    return Err(self.corrupt(format!("array '{key}' claims {len} elements")));
                }
                for _ in 0..len {
                    self.value(elem_type, key)?;
                }
                MetaValue::Array { elem_type, len }
            }
            other => return Err(self.corrupt(format!("key '{key}' has unknown type {other}"))),
        })
    }
}

/// Reads the header of a GGUF file and checks that the file is long enough to hold
/// every tensor the header describes (a truncated download is the common failure).
pub fn read_info(path: &Path) -> Result<GgufInfo, GgufError> {
    let io = |e| GgufError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let file = File::open(path).map_err(io)?;
    let file_bytes = file.metadata().map_err(io)?.len();
    let mut r = Reader {
        r: BufReader::with_capacity(1 << 16, file),
        pos: 0,
        path: path.to_path_buf(),
        file_bytes,
    };
    if file_bytes < 4 {
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            magic: 0,
        });
    }
    let magic = r.u32("magic")?;
    if magic != GGUF_MAGIC {
        return Err(GgufError::NotGguf {
            path: path.to_path_buf(),
            magic,
        });
    }
    let version = r.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(GgufError::Version {
            path: path.to_path_buf(),
            version,
        });
    }
    let n_tensors = r.u64("tensor count")?;
    let n_kv = r.u64("metadata count")?;
    if n_tensors > MAX_COUNT || n_kv > MAX_COUNT {
        return Err(r.corrupt(format!("{n_tensors} tensors, {n_kv} metadata keys")));
    }
    let mut meta = BTreeMap::new();
    for _ in 0..n_kv {
        let key = r.string("metadata key")?;
        let t = r.u32(&key)?;
        let v = r.value(t, &key)?;
        meta.insert(key, v);
    }
    let mut data_end: u64 = 0;
    let mut n_weights: u64 = 0;
    let mut tensor_bytes: u64 = 0;
    for _ in 0..n_tensors {
        let name = r.string("tensor name")?;
        let n_dims = r.u32(&name)?;
        if n_dims > 8 {
            return Err(r.corrupt(format!("tensor '{name}' has {n_dims} dimensions")));
        }
        let mut n_elems: u64 = 1;
        for _ in 0..n_dims {
            n_elems = n_elems.saturating_mul(r.u64(&name)?);
        }
        let t = r.u32(&name)?;
        let offset = r.u64(&name)?;
        let size = ggml_type_size(t)
            .map(|(bytes, block)| n_elems.div_ceil(block).saturating_mul(bytes))
            .unwrap_or(0);
        data_end = data_end.max(offset.saturating_add(size));
        n_weights = n_weights.saturating_add(n_elems);
        tensor_bytes = tensor_bytes.saturating_add(size);
    }
    let alignment = meta
        .get("general.alignment")
        .and_then(MetaValue::as_u64)
        .filter(|a| *a > 0)
        .unwrap_or(32);
    let data_start = r.pos.div_ceil(alignment) * alignment;
    let data_end_bytes = data_start.saturating_add(data_end);
    if data_end_bytes > file_bytes {
        return Err(GgufError::Truncated {
            path: path.to_path_buf(),
            what: format!("tensor data needs {data_end_bytes} bytes"),
            file_bytes,
        });
    }
    Ok(GgufInfo {
        version,
        meta,
        n_tensors,
        data_end_bytes,
        file_bytes,
        n_weights,
        tensor_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn put_str(v: &mut Vec<u8>, s: &str) {
        v.extend_from_slice(&(s.len() as u64).to_le_bytes());
        v.extend_from_slice(s.as_bytes());
    }

    /// A minimal valid GGUF: two metadata keys, one F32 tensor of 8 elements.
    fn tiny_gguf() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(b"GGUF");
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&1u64.to_le_bytes()); // tensors
        v.extend_from_slice(&3u64.to_le_bytes()); // kv
        put_str(&mut v, "general.architecture");
        v.extend_from_slice(&T_STRING.to_le_bytes());
        put_str(&mut v, "llama");
        put_str(&mut v, "llama.context_length");
        v.extend_from_slice(&T_U32.to_le_bytes());
        v.extend_from_slice(&2048u32.to_le_bytes());
        put_str(&mut v, "general.file_type");
        v.extend_from_slice(&T_U32.to_le_bytes());
        v.extend_from_slice(&3u32.to_le_bytes());
        put_str(&mut v, "w");
        v.extend_from_slice(&1u32.to_le_bytes());
        v.extend_from_slice(&8u64.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes()); // F32
        v.extend_from_slice(&0u64.to_le_bytes());
        while v.len() % 32 != 0 {
            v.push(0);
        }
        v.extend_from_slice(&[0u8; 32]);
        v
    }

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn bits_per_weight_and_provenance() {
        let f = write(&tiny_gguf());
        let mut info = read_info(f.path()).unwrap();
        assert_eq!((info.n_weights, info.tensor_bytes), (8, 32));
        assert_eq!(info.bits_per_weight(), Some(32.0));
        assert_eq!(info.requantized_from(), None);
        let mut from = |v: &str| {
            info.meta
                .insert(QUANTIZED_FROM_KEY.into(), MetaValue::Str(v.into()));
            info.requantized_from().map(str::to_string)
        };
        assert_eq!(from("m.F16.gguf (F16)"), None);
        assert_eq!(
            from("m.Q4_1.gguf (Q4_1)").as_deref(),
            Some("m.Q4_1.gguf (Q4_1)")
        );
    }

    #[test]
    fn reads_metadata_of_a_valid_file() {
        let f = write(&tiny_gguf());
        let info = read_info(f.path()).unwrap();
        assert_eq!(info.arch(), Some("llama"));
        assert_eq!(info.context_length(), Some(2048));
        assert_eq!(info.quant(), Some("Q4_1"));
        assert_eq!(info.n_tensors, 1);
    }

    #[test]
    fn truncated_tensor_data_is_reported() {
        let mut b = tiny_gguf();
        b.truncate(b.len() - 8);
        let f = write(&b);
        let e = read_info(f.path()).unwrap_err();
        assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
        assert!(e.to_string().contains("truncated"));
    }

    #[test]
    fn truncated_header_is_reported() {
        let b = tiny_gguf();
        let f = write(&b[..40]);
        assert!(matches!(
            read_info(f.path()).unwrap_err(),
            GgufError::Truncated { .. }
        ));
    }

    #[test]
    fn non_gguf_is_refused_with_its_magic() {
        let f = write(b"PK\x03\x04 this is a zip");
        let e = read_info(f.path()).unwrap_err();
        assert!(matches!(e, GgufError::NotGguf { .. }));
        assert!(e.to_string().contains("not a GGUF file"));
    }

    #[test]
    fn absurd_counts_are_corrupt_not_oom() {
        let mut v = Vec::new();
        v.extend_from_slice(b"GGUF");
        v.extend_from_slice(&3u32.to_le_bytes());
        v.extend_from_slice(&u64::MAX.to_le_bytes());
        v.extend_from_slice(&0u64.to_le_bytes());
        let f = write(&v);
        assert!(matches!(
            read_info(f.path()).unwrap_err(),
            GgufError::Corrupt { .. }
        ));
    }
}
