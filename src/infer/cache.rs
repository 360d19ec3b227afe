//! The loaded-model cache: models stay loaded between jobs within a memory budget,
//! evicted least-recently-used first, each with its own keep-alive
//! (> 0: seconds after last use, 0: unload right after the job, < 0: keep forever).
//! Generic over the model type so the policy is testable without llama.cpp.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One cached model.
pub struct Entry<M> {
    /// Resolved file path (the cache key).
    pub path: PathBuf,
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
}

impl<M> Default for ModelCache<M> {
    fn default() -> Self {
        ModelCache {
            entries: Vec::new(),
        }
    }
}

impl<M> ModelCache<M> {
    pub fn get(&self, path: &Path) -> Option<&Entry<M>> {
        self.entries.iter().find(|e| e.path == path)
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.get(path).is_some()
    }

    /// Bytes held by all cached models, or by all but `except`.
    pub fn bytes_except(&self, except: Option<&Path>) -> u64 {
        self.entries
            .iter()
            .filter(|e| Some(e.path.as_path()) != except)
            .map(|e| e.bytes)
            .sum()
    }

    pub fn insert(&mut self, entry: Entry<M>) {
        self.entries.retain(|e| e.path != entry.path);
        self.entries.push(entry);
    }

    /// Marks a model used now with the given keep-alive; a keep-alive of 0 unloads it.
    pub fn touch(&mut self, path: &Path, keep_alive_s: i64, now: Instant) {
        if keep_alive_s == 0 {
            self.entries.retain(|e| e.path != path);
            return;
        }
        if let Some(e) = self.entries.iter_mut().find(|e| e.path == path) {
            e.last_used = now;
            e.keep_alive_s = keep_alive_s;
        }
    }

    /// Evicts least-recently-used models (never `keep`) until `need_bytes` more fit
    /// in `budget_bytes`. Returns the evicted paths.
    pub fn make_room(&mut self, need_bytes: u64, budget_bytes: u64, keep: &Path) -> Vec<PathBuf> {
        let mut evicted = Vec::new();
        while self.bytes_except(None) + need_bytes > budget_bytes {
            let victim = self
                .entries
                .iter()
                .enumerate()
                .filter(|(_, e)| e.path != keep)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(i, _)| i);
            match victim {
                Some(i) => evicted.push(self.entries.remove(i).path),
                None => break,
            }
        }
        evicted
    }

    /// Unloads models whose keep-alive has run out.
    pub fn expire(&mut self, now: Instant) -> Vec<PathBuf> {
        let mut gone = Vec::new();
        self.entries.retain(|e| {
            let keep = e.keep_alive_s < 0
                || now.duration_since(e.last_used) < Duration::from_secs(e.keep_alive_s as u64);
            if !keep {
                gone.push(e.path.clone());
            }
            keep
        });
        gone
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.entries.iter().map(|e| e.path.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, bytes: u64, t: Instant, ka: i64) -> Entry<()> {
        Entry {
            path: PathBuf::from(name),
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
        let ev = c.make_room(100, 250, Path::new("new"));
        assert_eq!(ev, vec![PathBuf::from("a")]);
        assert!(c.contains(Path::new("b")));
    }

    #[test]
    fn keep_alive_zero_unloads_and_negative_keeps() {
        let t0 = Instant::now();
        let mut c = ModelCache::default();
        c.insert(entry("a", 1, t0, 300));
        c.insert(entry("b", 1, t0, -1));
        c.insert(entry("c", 1, t0, 5));
        c.touch(Path::new("a"), 0, t0);
        assert!(!c.contains(Path::new("a")));
        let gone = c.expire(t0 + Duration::from_secs(3600));
        assert_eq!(gone, vec![PathBuf::from("c")]);
        assert!(c.contains(Path::new("b")));
    }
}
