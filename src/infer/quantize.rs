//! `llama_model_quantize` behind a safe function: a model of the model directory is
//! written again in another quantization, beside it, with its provenance in the GGUF
//! metadata (`edgewatt.quantized_from`). Checks come first (type, names, existing
//! output, requantization, free space); a partial output is removed on failure.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::engine::backend;
use super::gguf::{self, is_float_type, QUANTIZED_FROM_KEY};
use super::registry::{self, ModelNameError};

/// Quantization types `edgewatt quantize` writes: (name, llama_ftype, bits per weight of
/// the format's blocks). Formats that need an importance matrix (IQ1/IQ2/IQ3) are left out.
const TYPES: &[(&str, u32, f64)] = &[
    ("F32", 0, 32.0),
    ("F16", 1, 16.0),
    ("Q4_0", 2, 4.5),
    ("Q4_1", 3, 5.0),
    ("Q8_0", 7, 8.5),
    ("Q5_0", 8, 5.5),
    ("Q5_1", 9, 6.0),
    ("Q2_K", 10, 2.625),
    ("Q3_K_S", 11, 3.4375),
    ("Q3_K_M", 12, 3.4375),
    ("Q3_K_L", 13, 3.4375),
    ("Q4_K_S", 14, 4.5),
    ("Q4_K_M", 15, 4.5),
    ("Q5_K_S", 16, 5.5),
    ("Q5_K_M", 17, 5.5),
    ("Q6_K", 18, 6.5625),
    ("IQ4_NL", 25, 4.5),
    ("IQ4_XS", 30, 4.25),
    ("BF16", 32, 16.0),
];

/// Why a quantization was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error("unknown quantization type '{0}'; allowed: {allowed}", allowed = type_names())]
    UnknownType(String),
    #[error("invalid '--out': {0}")]
    OutName(ModelNameError),
    #[error("'--out' names one file but {0} types were asked for; give one '--type' with '--out'")]
    OutWithSeveralTypes(usize),
    #[error(transparent)]
    Source(ModelNameError),
    #[error("model '{name}' cannot be read: {reason}")]
    SourceUnreadable { name: String, reason: String },
    #[error("model '{name}' is already {quant}: a {to} made from it has {to}'s speed and size but at best {quant}'s quality, not a true {to}'s; pass '--allow-requantize' to do it anyway (the output records that it was requantized)")]
    Requantize {
        name: String,
        quant: String,
        to: String,
    },
    #[error("output '{0}' exists; pass '--force' to overwrite it")]
    Exists(PathBuf),
    #[error(
        "not enough free space in '{dir}': about {need_bytes} bytes needed, {free_bytes} free"
    )]
    DiskFull {
        dir: PathBuf,
        need_bytes: u64,
        free_bytes: u64,
    },
    #[error("provenance '{0}' is longer than GGUF metadata overrides allow (127 bytes)")]
    ProvenanceTooLong(String),
    #[error("llama.cpp failed to quantize '{src}' to {to} (code {code}); its log (-v) says why")]
    Failed { src: PathBuf, to: String, code: u32 },
    #[error("llama.cpp backend: {0}")]
    Backend(String),
}

impl QuantizeError {
    /// Stable code for scripts.
    pub fn code(&self) -> &'static str {
        match self {
            QuantizeError::UnknownType(_) => "unknown_quant_type",
            QuantizeError::OutName(_) | QuantizeError::OutWithSeveralTypes(_) => "invalid_output",
            QuantizeError::Source(ModelNameError::NotFound { .. }) => "model_not_found",
            QuantizeError::Source(_) => "invalid_model_name",
            QuantizeError::SourceUnreadable { .. } => "model_unreadable",
            QuantizeError::Requantize { .. } => "requantize_refused",
            QuantizeError::Exists(_) => "output_exists",
            QuantizeError::DiskFull { .. } => "disk_full",
            QuantizeError::ProvenanceTooLong(_) => "invalid_output",
            QuantizeError::Failed { .. } => "quantize_failed",
            QuantizeError::Backend(_) => "backend_failed",
        }
    }
}

fn type_names() -> String {
    TYPES.iter().map(|t| t.0).collect::<Vec<_>>().join(", ")
}

/// A quantization type by name (case-insensitive): (canonical name, llama_ftype, bpw).
pub fn parse_type(name: &str) -> Result<(&'static str, u32, f64), QuantizeError> {
    TYPES
        .iter()
        .find(|t| t.0.eq_ignore_ascii_case(name.trim()))
        .copied()
        .ok_or_else(|| QuantizeError::UnknownType(name.to_string()))
}

/// What to quantize.
#[derive(Debug, Clone)]
pub struct QuantizeRequest {
    /// Source model name (file stem in the model directory).
    pub model: String,
    /// Target type name, e.g. `Q8_0`.
    pub to: String,
    /// Output model name (default `MODEL.TYPE`).
    pub out: Option<String>,
    /// Threads (None = all cores).
    pub threads: Option<u32>,
    pub force: bool,
    pub allow_requantize: bool,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct QuantizeOutcome {
    /// The new model's name.
    pub name: String,
    pub path: PathBuf,
    pub quant: String,
    pub size_bytes: u64,
    pub bits_per_weight: Option<f64>,
    /// `edgewatt.quantized_from` as written.
    pub quantized_from: String,
    /// Set when the source was already quantized.
    pub requantized_from: Option<String>,
    pub elapsed_s: f64,
}

/// Bytes the output needs at most: every weight at the target's block size with a
/// quarter's margin (K-quant mixes keep some tensors wider), plus the header.
pub fn estimate_output_bytes(n_weights: u64, header_bytes: u64, bpw: f64) -> u64 {
    (n_weights as f64 * bpw / 8.0 * 1.25) as u64 + header_bytes + (16 << 20)
}

/// Free bytes for an unprivileged writer on the file system holding `dir` (statvfs).
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let c = CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call; `st` is a valid,
    // writable statvfs the call fills in.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Everything checked before any byte is written.
struct Plan {
    src: PathBuf,
    out_name: String,
    out: PathBuf,
    to: &'static str,
    ftype: u32,
    provenance: String,
    requantized: bool,
    expect_bytes: u64,
}

fn plan(dir: &Path, req: &QuantizeRequest, free: u64) -> Result<Plan, QuantizeError> {
    let (to, ftype, bpw) = parse_type(&req.to)?;
    let src = registry::resolve(dir, &req.model).map_err(QuantizeError::Source)?;
    let info = gguf::read_info(&src).map_err(|e| QuantizeError::SourceUnreadable {
        name: req.model.clone(),
        reason: e.to_string(),
    })?;
    let src_quant = info.quant().unwrap_or("unknown").to_string();
    let requantized = !is_float_type(&src_quant);
    if requantized && !req.allow_requantize {
        return Err(QuantizeError::Requantize {
            name: req.model.clone(),
            quant: src_quant,
            to: to.to_string(),
        });
    }
    let out_name = req
        .out
        .clone()
        .unwrap_or_else(|| format!("{}.{to}", req.model));
    registry::validate_name(&out_name).map_err(QuantizeError::OutName)?;
    let out = dir.join(format!("{out_name}.gguf"));
    if out == src {
        return Err(QuantizeError::Exists(out));
    }
    if out.exists() && !req.force {
        return Err(QuantizeError::Exists(out));
    }
    let file = src
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let provenance = format!("{file} ({src_quant})");
    if provenance.len() > 127 {
        return Err(QuantizeError::ProvenanceTooLong(provenance));
    }
    let header_bytes = info.file_bytes.saturating_sub(info.tensor_bytes);
    let need_bytes = estimate_output_bytes(info.n_weights, header_bytes, bpw);
    // An overwritten output frees its bytes only when the new file replaces it.
    if free < need_bytes {
        return Err(QuantizeError::DiskFull {
            dir: dir.to_path_buf(),
            need_bytes,
            free_bytes: free,
        });
    }
    Ok(Plan {
        src,
        out_name,
        out,
        to,
        ftype,
        provenance,
        requantized,
        expect_bytes: (info.n_weights as f64 * bpw / 8.0) as u64 + header_bytes,
    })
}

/// Copies `s` into a fixed C char array, NUL-terminated (the caller checked the length).
fn put_c_str(dst: &mut [libc::c_char; 128], s: &str) {
    for (d, b) in dst.iter_mut().zip(s.bytes().chain(std::iter::once(0))) {
        *d = b as libc::c_char;
    }
}

/// Quantizes one model. `progress(written_bytes, expected_bytes)` is called about
/// once a second from a watcher thread while llama.cpp writes.
pub fn quantize(
    dir: &Path,
    req: &QuantizeRequest,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<QuantizeOutcome, QuantizeError> {
    let free = free_bytes(dir).map_err(|e| QuantizeError::SourceUnreadable {
        name: req.model.clone(),
        reason: format!("cannot stat the model directory '{}': {e}", dir.display()),
    })?;
    let p = plan(dir, req, free)?;
    backend().map_err(|e| QuantizeError::Backend(e.to_string()))?;
    // llama.cpp writes the output in place; write to a temporary name in the same
    // directory and rename at the end, so a failure never leaves a half model under
    // the output's name (and an overwritten one is replaced only on success).
    let tmp = dir.join(format!(".{}.gguf.partial", p.out_name));
    let c_src = CString::new(p.src.as_os_str().as_encoded_bytes()).map_err(|_| {
        QuantizeError::Source(ModelNameError::NotFound {
            name: req.model.clone(),
            dir: dir.to_path_buf(),
        })
    })?;
    let c_tmp = CString::new(tmp.as_os_str().as_encoded_bytes())
        .map_err(|_| QuantizeError::ProvenanceTooLong(p.out_name.clone()))?;

    // Metadata overrides: one string key, then the all-zero terminator llama.cpp's
    // loop stops at (`key[0] == 0`).
    // SAFETY: llama_model_kv_override is plain C data (an enum tag, a char array and a
    // union of scalars/char array); all-zero bytes are a valid value of it.
    let mut overrides: [llama_cpp_sys_2::llama_model_kv_override; 2] =
        unsafe { std::mem::zeroed() };
    overrides[0].tag = llama_cpp_sys_2::LLAMA_KV_OVERRIDE_TYPE_STR;
    put_c_str(&mut overrides[0].key, QUANTIZED_FROM_KEY);
    // SAFETY: writing the `val_str` member of the union we just tagged as a string.
    unsafe { put_c_str(&mut overrides[0].__bindgen_anon_1.val_str, &p.provenance) };

    // SAFETY: returns a by-value struct of defaults; no pointers into our memory.
    let mut params = unsafe { llama_cpp_sys_2::llama_model_quantize_default_params() };
    params.nthread = req.threads.map(|t| t as i32).unwrap_or(0);
    params.ftype = p.ftype as _;
    params.allow_requantize = p.requantized;
    params.kv_overrides = overrides.as_ptr();

    let t0 = std::time::Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let code = std::thread::scope(|s| {
        let watch_done = done.clone();
        let watch_tmp = tmp.clone();
        let expect = p.expect_bytes;
        s.spawn(move || {
            while !watch_done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(500));
                if let Ok(m) = std::fs::metadata(&watch_tmp) {
                    progress(m.len(), expect);
                }
            }
        });
        // SAFETY: both paths are NUL-terminated C strings and `params` (with the
        // override array it points to) lives on this stack frame for the whole call;
        // llama.cpp only reads them. The call is synchronous and reports failure by
        // a non-zero return (C++ exceptions are caught inside llama.cpp).
        let code = unsafe {
            llama_cpp_sys_2::llama_model_quantize(c_src.as_ptr(), c_tmp.as_ptr(), &params)
        };
        done.store(true, Ordering::Relaxed);
        code
    });
    if code != 0 {
        let _ = std::fs::remove_file(&tmp);
        return Err(QuantizeError::Failed {
            src: p.src,
            to: p.to.to_string(),
            code,
        });
    }
    let checked = gguf::read_info(&tmp);
    let info = match checked {
        Ok(i) => i,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(QuantizeError::SourceUnreadable {
                name: p.out_name,
                reason: format!("llama.cpp wrote an unreadable file: {e}"),
            });
        }
    };
    if let Err(e) = std::fs::rename(&tmp, &p.out) {
        let _ = std::fs::remove_file(&tmp);
        return Err(QuantizeError::SourceUnreadable {
            name: p.out_name,
            reason: format!("cannot move the output into place: {e}"),
        });
    }
    Ok(QuantizeOutcome {
        name: p.out_name,
        path: p.out,
        quant: info.quant().unwrap_or("unknown").to_string(),
        size_bytes: info.file_bytes,
        bits_per_weight: info.bits_per_weight(),
        quantized_from: p.provenance,
        requantized_from: info.requantized_from().map(str::to_string),
        elapsed_s: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_parse_case_insensitively_and_unknown_ones_are_named() {
        assert_eq!(parse_type("q8_0").unwrap().0, "Q8_0");
        assert_eq!(parse_type("Q4_K_M").unwrap().1, 15);
        let e = parse_type("Q9_9").unwrap_err();
        assert_eq!(e.code(), "unknown_quant_type");
        assert!(e.to_string().contains("'Q9_9'") && e.to_string().contains("Q4_0"));
        // Every name matches llama.h's enum as the GGUF reader names it.
        for (name, ft, _) in TYPES {
            assert_eq!(gguf::ftype_name(*ft as u64), *name);
        }
    }

    #[test]
    fn estimate_has_margin_and_free_space_is_read() {
        let e = estimate_output_bytes(1_000_000, 1000, 8.0);
        assert!(e > 1_000_000 + 1000);
        assert!(free_bytes(Path::new("/")).unwrap() > 0);
        assert!(free_bytes(Path::new("/no/such/dir")).is_err());
    }
}
