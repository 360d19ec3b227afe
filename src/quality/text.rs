//! Scoring texts: a name resolved in the text directory exactly like model names (the
//! stem of a `.txt` directly inside it; paths and traversal refused), or the built-in
//! `licenses` — the regular files of /usr/share/common-licenses (symlinks skipped), in
//! byte-wise sorted name order, concatenated with nothing between.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::QualityError;
use crate::infer::registry::{self, ModelNameError};

/// The built-in text's name.
pub const LICENSES: &str = "licenses";
/// Where the built-in text's files are (every Debian, Raspberry Pi OS, Ubuntu/JetPack).
pub const LICENSES_DIR: &str = "/usr/share/common-licenses";

/// A text's bytes with its name and digest.
#[derive(Debug, Clone, Serialize)]
pub struct ScoringText {
    pub name: String,
    #[serde(skip)]
    pub bytes: Vec<u8>,
    pub sha256: String,
}

impl ScoringText {
    pub fn new(name: &str, bytes: Vec<u8>) -> Self {
        let sha256 = hex(&Sha256::digest(&bytes));
        ScoringText {
            name: name.to_string(),
            bytes,
            sha256,
        }
    }

    /// What is tokenized: the bytes less one trailing newline, as `llama-perplexity -f`
    /// reads a file.
    pub fn prompt_bytes(&self) -> &[u8] {
        self.bytes.strip_suffix(b"\n").unwrap_or(&self.bytes)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The built-in text from `dir` (the real one is [`LICENSES_DIR`]).
pub fn licenses_from(dir: &Path) -> std::io::Result<Vec<u8>> {
    let mut names: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // file_type() does not follow symlinks: links (GPL → GPL-3 …) are skipped.
        if !entry.file_type()?.is_file() {
            continue;
        }
        names.push((entry.file_name().as_encoded_bytes().to_vec(), entry.path()));
    }
    names.sort();
    let mut out = Vec::new();
    for (_, p) in names {
        out.extend_from_slice(&std::fs::read(p)?);
    }
    Ok(out)
}

/// Resolves a text name in `texts_dir` (or the built-in `licenses`) and reads it.
pub fn resolve(texts_dir: &Path, name: &str) -> Result<ScoringText, QualityError> {
    let unreadable = |e: std::io::Error| QualityError::TextUnreadable {
        name: name.to_string(),
        reason: e.to_string(),
    };
    registry::validate_name(name).map_err(|e| match e {
        ModelNameError::Invalid { reason, .. } => QualityError::InvalidTextName {
            name: name.to_string(),
            reason,
        },
        _ => QualityError::InvalidTextName {
            name: name.to_string(),
            reason: "it is not a plain name",
        },
    })?;
    let candidate = texts_dir.join(format!("{name}.txt"));
    if name == LICENSES && !candidate.exists() {
        let bytes = licenses_from(Path::new(LICENSES_DIR)).map_err(unreadable)?;
        return Ok(ScoringText::new(name, bytes));
    }
    let not_found = || QualityError::TextNotFound {
        name: name.to_string(),
        dir: texts_dir.display().to_string(),
    };
    let real = std::fs::canonicalize(&candidate).map_err(|_| not_found())?;
    let real_dir = std::fs::canonicalize(texts_dir).map_err(|_| not_found())?;
    if !real.starts_with(&real_dir) {
        return Err(QualityError::InvalidTextName {
            name: name.to_string(),
            reason: "it resolves outside the text directory",
        });
    }
    if !std::fs::metadata(&real).map_err(unreadable)?.is_file() {
        return Err(not_found());
    }
    let bytes = std::fs::read(&real).map_err(unreadable)?;
    Ok(ScoringText::new(name, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_like_model_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("wiki.txt"), b"hello\n").unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("o.txt"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("o.txt"), dir.path().join("link.txt"))
            .unwrap();
        let t = resolve(dir.path(), "wiki").unwrap();
        assert_eq!(t.prompt_bytes(), b"hello");
        assert_eq!(
            t.sha256,
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        for bad in ["../wiki", "a/b", ".hidden", ""] {
            let e = resolve(dir.path(), bad).unwrap_err();
            assert_eq!(e.code(), "invalid_text_name", "{bad}");
        }
        assert_eq!(
            resolve(dir.path(), "nope").unwrap_err().code(),
            "text_not_found"
        );
        assert_eq!(
            resolve(dir.path(), "link").unwrap_err().code(),
            "invalid_text_name"
        );
    }

    #[test]
    fn licenses_are_regular_files_sorted_bytewise_and_concatenated() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b"), b"B").unwrap();
        std::fs::write(dir.path().join("a"), b"A").unwrap();
        std::fs::write(dir.path().join("Z"), b"Z").unwrap();
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("c")).unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        assert_eq!(licenses_from(dir.path()).unwrap(), b"ZAB");
    }

    #[test]
    fn the_real_licenses_text_is_long_enough() {
        let t = resolve(Path::new("/nonexistent"), LICENSES).unwrap();
        let words = String::from_utf8_lossy(&t.bytes).split_whitespace().count();
        assert!(words > 20_000, "{words} words");
    }
}
