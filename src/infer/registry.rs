//! Models are referenced by name: the file stem of a `.gguf` file directly inside the
//! configured model directory. Anything else (paths, `..`, links leaving the
//! directory, non-regular files) is refused before a file is opened.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::gguf::{self, GgufError};

/// Why a model name does not resolve.
#[derive(Debug, thiserror::Error)]
pub enum ModelNameError {
    #[error("invalid model name '{name}': {reason}")]
    Invalid { name: String, reason: &'static str },
    #[error("model '{name}' not found: no '{name}.gguf' in model directory '{dir}'")]
    NotFound { name: String, dir: PathBuf },
    #[error("model '{name}' resolves outside the model directory '{dir}'")]
    Escapes { name: String, dir: PathBuf },
    #[error("model '{name}' is not a regular file: '{path}'")]
    NotAFile { name: String, path: PathBuf },
}

/// Checks a model name's shape (pure; no file system access).
pub fn validate_name(name: &str) -> Result<(), ModelNameError> {
    let bad = |reason| {
        Err(ModelNameError::Invalid {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 200 {
        return bad("it is longer than 200 bytes");
    }
    if name.contains('/') || name.contains('\\') {
        return bad("it contains a path separator; give the file stem only");
    }
    if name.contains("..") {
        return bad("it contains '..'");
    }
    if name.starts_with('.') {
        return bad("it starts with '.'");
    }
    if name.chars().any(|c| c.is_control() || c == '\0') {
        return bad("it contains control characters");
    }
    Ok(())
}

/// Resolves a model name to a regular `.gguf` file inside `dir` (symlinks are
/// followed but the target must stay inside `dir`).
pub fn resolve(dir: &Path, name: &str) -> Result<PathBuf, ModelNameError> {
    validate_name(name)?;
    let candidate = dir.join(format!("{name}.gguf"));
    let not_found = || ModelNameError::NotFound {
        name: name.to_string(),
        dir: dir.to_path_buf(),
    };
    let real = std::fs::canonicalize(&candidate).map_err(|_| not_found())?;
    let real_dir = std::fs::canonicalize(dir).map_err(|_| not_found())?;
    if !real.starts_with(&real_dir) {
        return Err(ModelNameError::Escapes {
            name: name.to_string(),
            dir: dir.to_path_buf(),
        });
    }
    let meta = std::fs::metadata(&real).map_err(|_| not_found())?;
    if !meta.is_file() {
        return Err(ModelNameError::NotAFile {
            name: name.to_string(),
            path: candidate,
        });
    }
    Ok(candidate)
}

/// A model found in the model directory, with facts from its GGUF header.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// Name to use in jobs (file stem).
    pub name: String,
    /// File name inside the model directory.
    pub file: String,
    /// File size.
    pub size_bytes: u64,
    /// `general.architecture`.
    pub arch: Option<String>,
    /// `general.size_label`, e.g. `135M`.
    pub params: Option<String>,
    /// Quantization (`general.file_type`), e.g. `Q4_1`.
    pub quant: Option<String>,
    /// Trained context length.
    pub trained_ctx: Option<u64>,
    /// Whether the file has a chat template.
    pub chat_template: bool,
    /// Tensor data bits per weight.
    pub bits_per_weight: Option<f64>,
    /// `edgewatt.quantized_from`: the file this one was quantized from, and its type.
    pub quantized_from: Option<String>,
    /// Same, when that source was already quantized (requantized: quality below a true
    /// quantization to this type).
    pub requantized_from: Option<String>,
    /// Why the file cannot be used, when it cannot.
    pub error: Option<String>,
}

/// Lists every `*.gguf` in `dir`, sorted by name; unreadable files are listed with
/// their error rather than hidden.
pub fn list(dir: &Path) -> std::io::Result<Vec<ModelInfo>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("gguf") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let size_bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        let file = entry.file_name().to_string_lossy().into_owned();
        let mut info = ModelInfo {
            name: name.to_string(),
            file,
            size_bytes,
            arch: None,
            params: None,
            quant: None,
            trained_ctx: None,
            chat_template: false,
            bits_per_weight: None,
            quantized_from: None,
            requantized_from: None,
            error: None,
        };
        match gguf::read_info(&path) {
            Ok(g) => {
                info.arch = g.arch().map(str::to_string);
                info.params = g.size_label().map(str::to_string);
                info.quant = g.quant().map(str::to_string);
                info.trained_ctx = g.context_length();
                info.chat_template = g.has_chat_template();
                info.bits_per_weight = g.bits_per_weight();
                info.quantized_from = g.quantized_from().map(str::to_string);
                info.requantized_from = g.requantized_from().map(str::to_string);
            }
            Err(e) => info.error = Some(e.to_string()),
        }
        out.push(info);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Reads and checks the header of a resolved model file.
pub fn inspect(path: &Path) -> Result<gguf::GgufInfo, GgufError> {
    gguf::read_info(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_paths_are_refused() {
        for n in ["../etc/passwd", "a/b", "a\\b", "..", ".hidden", "", "x\0y"] {
            assert!(
                matches!(validate_name(n), Err(ModelNameError::Invalid { .. })),
                "{n:?}"
            );
        }
        validate_name("SmolLM2-135M-Instruct.Q4_1").unwrap();
    }

    #[test]
    fn resolve_finds_regular_files_only_inside_the_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.gguf"), b"GGUF").unwrap();
        std::fs::create_dir(dir.path().join("d.gguf")).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("o.gguf"), b"GGUF").unwrap();
        std::os::unix::fs::symlink(outside.path().join("o.gguf"), dir.path().join("link.gguf"))
            .unwrap();

        assert!(resolve(dir.path(), "m").is_ok());
        assert!(matches!(
            resolve(dir.path(), "nope"),
            Err(ModelNameError::NotFound { .. })
        ));
        assert!(matches!(
            resolve(dir.path(), "d"),
            Err(ModelNameError::NotAFile { .. })
        ));
        assert!(matches!(
            resolve(dir.path(), "link"),
            Err(ModelNameError::Escapes { .. })
        ));
    }
}
