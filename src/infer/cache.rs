//! The loaded-model cache: models stay loaded between jobs within a memory budget,
//! evicted least-recently-used first, each with its own keep-alive
//! (> 0: seconds after last use, 0: unload right after the job, < 0: keep forever).
//! Generic over the model type so the policy is testable without llama.cpp.
//!
//! The key is the file *and* its offload: `n_gpu_layers` is fixed when llama.cpp loads
//! a model, so the same file with 0 and with 31 layers on the GPU is two entries (two
//! loads, each within the budget, each with its own keep-alive and LRU place).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a loaded model is: its file and the layers it was loaded with on the GPU.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelKey {
    pub path: PathBuf,
    /// Layers offloaded at load (already clamped to what llama.cpp uses).
    pub n_gpu_layers: u32,
}

impl ModelKey {
    pub fn new(path: impl Into<PathBuf>, n_gpu_layers: u32) -> Self {
        ModelKey {
            path: path.into(),
            n_gpu_layers,
        }
    }
}

impl fmt::Display for ModelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (n_gpu_layers {})",
            self.path.display(),
            self.n_gpu_layers
        )
    }
}

/// One cached model.
pub struct Entry<M> {
    /// Resolved file path and offload (the cache key).
    pub key: ModelKey,
    /// The loaded model.
    pub model: M,
    /// Bytes it holds (tensor bytes).
    pub bytes: u64,
    /// Last time a job finished with it.
    pub last_used: Instant,
    /// Keep-alive in seconds after `last_used` (see module docs).
    pub keep_alive_s: i64,
}

/// LRU cache of loaded models.
pub struct ModelCache<M> {
    entries: Vec<Entry<M>>,
    /// Bytes of all entries, kept current after every change so other threads (the
    /// metrics endpoint) can read it without asking the inference thread.
    resident_bytes: Arc<AtomicU64>,
}

impl<M> Default for ModelCache<M> {
    fn default() -> Self {
        ModelCache {
            entries: Vec::new(),
            resident_bytes: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl<M> ModelCache<M> {
    pub fn get(&self, key: &ModelKey) -> Option<&Entry<M>> {
        self.entries.iter().find(|e| e.key == *key)
    }

    pub fn contains(&self, key: &ModelKey) -> bool {
        self.get(key).is_some()
    }

    /// Loaded variants (offloads) of one file.
    pub fn variants(&self, path: &Path) -> usize {
        self.entries.iter().filter(|e| e.key.path == path).count()
    }

    /// Bytes held by all cached models, or by all but `except`.
    pub fn bytes_except(&self, except: Option<&ModelKey>) -> u64 {
        self.entries
            .iter()
            .filter(|e| Some(&e.key) != except)
            .map(|e| e.bytes)
            .sum()
    }

    pub fn insert(&mut self, entry: Entry<M>) {
        self.entries.retain(|e| e.key != entry.key);
        self.entries.push(entry);
        self.publish_bytes();
    }

    /// Marks a model used now with the given keep-alive; a keep-alive of 0 unloads it.
    pub fn touch(&mut self, key: &ModelKey, keep_alive_s: i64, now: Instant) {
        if keep_alive_s == 0 {
            self.entries.retain(|e| e.key != *key);
            self.publish_bytes();
            return;
        }
        if let Some(e) = self.entries.iter_mut().find(|e| e.key == *key) {
            e.last_used = now;
            e.keep_alive_s = keep_alive_s;
        }
    }

    /// Evicts least-recently-used models (never `keep`) until `need_bytes` more fit
    /// in `budget_bytes`. Returns the evicted paths.
    pub fn make_room(
        &mut self,
        need_bytes: u64,
        budget_bytes: u64,
        keep: &ModelKey,
    ) -> Vec<ModelKey> {
        let mut evicted = Vec::new();
        while self.bytes_except(None) + need_bytes > budget_bytes {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.key != *keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i);
            match victim {
                Some(i) => evicted.push(self.entries.remove(i).key),
                None => break,
            }
        }
        self.publish_bytes();
        evicted
    }

    /// Unloads models whose keep-alive has run out.
    pub fn expire(&mut self, now: Instant) -> Vec<ModelKey> {
        let mut gone = Vec::new();
        self.entries.retain(|e| {
            let keep = e.keep_alive_s < 0
                || now.duration_since(e.last_used) < Duration::from_secs(e.keep_alive_s as u64);
            if !keep {
                gone.push(e.key.clone());
            }
            keep
        });
        if !gone.is_empty() {
            self.publish_bytes();
        }
        gone
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// A shared reading of the bytes the cache holds (what [`bytes_except`](Self::bytes_except)
    /// with `None` says), updated on every change.
    pub fn resident_bytes(&self) -> Arc<AtomicU64> {
        self.resident_bytes.clone()
    }

    fn publish_bytes(&self) {
        self.resident_bytes
            .store(self.bytes_except(None), Ordering::Relaxed);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn keys(&self) -> Vec<ModelKey> {
        self.entries.iter().map(|e| e.key.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> ModelKey {
        ModelKey::new(name, 0)
    }

    fn entry(name: &str, bytes: u64, t: Instant, ka: i64) -> Entry<()> {
        Entry {
            key: key(name),
            model: (),
            bytes,
            last_used: t,
            keep_alive_s: ka,
        }
    }

    #[test]
    fn evicts_least_recently_used_first() {
        let t0 = Instant::now();
        let mut c = ModelCache::default();
        c.insert(entry("a", 100, t0, 300));
        c.insert(entry("b", 100, t0 + Duration::from_secs(1), 300));
        let ev = c.make_room(100, 250, &key("new"));
        assert_eq!(ev, vec![key("a")]);
        assert!(c.contains(&key("b")));
    }

    #[test]
    fn keep_alive_zero_unloads_and_negative_keeps() {
        let t0 = Instant::now();
        let mut c = ModelCache::default();
        c.insert(entry("a", 1, t0, 300));
        c.insert(entry("b", 1, t0, -1));
        c.insert(entry("c", 1, t0, 5));
        c.touch(&key("a"), 0, t0);
        assert!(!c.contains(&key("a")));
        let gone = c.expire(t0 + Duration::from_secs(3600));
        assert_eq!(gone, vec![key("c")]);
        assert!(c.contains(&key("b")));
    }

    #[test]
    fn offload_is_part_of_the_key() {
        let t0 = Instant::now();
        let mut c = ModelCache::default();
        let cpu = ModelKey::new("m.gguf", 0);
        let gpu = ModelKey::new("m.gguf", 31);
        c.insert(Entry {
            key: cpu.clone(),
            model: (),
            bytes: 100,
            last_used: t0,
            keep_alive_s: 300,
        });
        assert!(
            !c.contains(&gpu),
            "a 0-layer load cannot serve a 31-layer job"
        );
        c.insert(Entry {
            key: gpu.clone(),
            model: (),
            bytes: 100,
            last_used: t0 + Duration::from_secs(1),
            keep_alive_s: 5,
        });
        assert_eq!(c.len(), 2);
        assert_eq!(c.variants(Path::new("m.gguf")), 2);
        // Each has its own keep-alive and LRU place; the budget counts both.
        assert_eq!(c.bytes_except(None), 200);
        assert_eq!(c.expire(t0 + Duration::from_secs(10)), vec![gpu.clone()]);
        c.insert(Entry {
            key: gpu.clone(),
            model: (),
            bytes: 100,
            last_used: t0 + Duration::from_secs(1),
            keep_alive_s: 300,
        });
        assert_eq!(c.make_room(100, 250, &gpu), vec![cpu]);
    }
}
