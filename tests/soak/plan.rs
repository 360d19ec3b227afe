//! The soak's seeded plan: which job goes to which board, what it asks for, and the
//! moments the chaos happens (kill -9, broker restart, disk full, space back). Pure:
//! the same seed gives the same plan.

use serde_json::json;

use super::daemon_support::MODEL;

/// splitmix64: small, seedable, good enough to spread events.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What kind of job, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Generate,
    Perplexity,
    Canceled,
    Malformed,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Generate => "generate",
            Kind::Perplexity => "perplexity",
            Kind::Canceled => "generate + cancel",
            Kind::Malformed => "malformed",
        }
    }
}

/// One job of the plan.
#[derive(Debug, Clone)]
pub struct JobPlan {
    /// Job id, also the Correlation Data of its reply.
    pub id: String,
    /// Index of the board it is sent to.
    pub board: usize,
    pub kind: Kind,
    /// The payload bytes as published.
    pub payload: String,
    /// Cancel this long after submitting.
    pub cancel_after_ms: Option<u64>,
}

/// One chaos event, applied just before job `at_job` is submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chaos {
    /// `kill -9` board `board`; it is restarted `down_ms` later.
    Kill { board: usize, down_ms: u64 },
    /// Mosquitto stopped and started again on the same port.
    BrokerRestart,
    /// The store filesystem of the disk board is filled up.
    DiskFull,
    /// The filler is removed again.
    SpaceBack,
}

/// Sizes of a run.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub seed: u64,
    pub jobs: usize,
    pub boards: usize,
    pub kills: usize,
    pub broker_restarts: usize,
    pub disk_full_episodes: usize,
    /// Boards that are never killed (RSS is measured on the last of them).
    pub unkilled: usize,
}

const PROMPTS: &[&str] = &[
    "The capital of France is",
    "Write one sentence about the sea.",
    "List three colours:",
    "Q: What is 2 + 2?\nA:",
    "Once upon a time",
];

/// The jobs, in submission order.
pub fn jobs(s: &Sizes, rng: &mut Rng) -> Vec<JobPlan> {
    (0..s.jobs)
        .map(|i| {
            let id = format!("soak-{}-{i:05}", s.seed);
            let board = rng.below(s.boards as u64) as usize;
            let roll = rng.below(100);
            let (kind, payload, cancel_after_ms) = if roll < 8 {
                (Kind::Malformed, malformed(&id, rng), None)
            } else if roll < 18 {
                let p = json!({"id": id, "model": MODEL, "kind": "perplexity", "text": "licenses",
                               "n_ctx": 64, "max_chunks": 1, "threads": 1});
                (Kind::Perplexity, p.to_string(), None)
            } else {
                let max_tokens = [1u32, 2, 4, 8, 16, 32][rng.below(6) as usize];
                let mut prompt = PROMPTS[rng.below(PROMPTS.len() as u64) as usize].to_string();
                if rng.below(4) == 0 {
                    // A longer prefill now and then.
                    prompt = format!(
                        "{} {prompt}",
                        "The quick brown fox jumps over the lazy dog.".repeat(8)
                    );
                }
                let canceled = roll < 26;
                let tokens = if canceled { 64 } else { max_tokens };
                let p = json!({"id": id, "model": MODEL, "prompt": prompt, "max_tokens": tokens,
                               "temperature": 0, "threads": 1, "n_ctx": 512});
                let kind = if canceled {
                    Kind::Canceled
                } else {
                    Kind::Generate
                };
                (kind, p.to_string(), canceled.then(|| rng.below(400)))
            };
            JobPlan {
                id,
                board,
                kind,
                payload,
                cancel_after_ms,
            }
        })
        .collect()
}

/// A payload the daemon must refuse with a code (each still carries the id in its
/// Correlation Data, so the reply can be matched).
fn malformed(id: &str, rng: &mut Rng) -> String {
    match rng.below(6) {
        0 => "{not json".to_string(),
        1 => json!({"id": id, "prompt": "no model"}).to_string(),
        2 => json!({"id": id, "model": MODEL, "prompt": "x", "max_tokens": 0}).to_string(),
        3 => json!({"id": id, "model": MODEL, "prompt": "x", "bogus_field": 1}).to_string(),
        4 => json!({"id": id, "model": "no-such-model", "prompt": "x"}).to_string(),
        _ => json!({"id": id, "model": MODEL, "prompt": 17}).to_string(),
    }
}

/// The chaos schedule: (job index, event), sorted. A disk-full episode is followed
/// by its `SpaceBack` a few jobs later; kills never hit the `unkilled` last boards.
pub fn chaos(s: &Sizes, rng: &mut Rng) -> Vec<(usize, Chaos)> {
    let mut out = Vec::new();
    // Leave the first 5 % (warm-up) and the last 5 % quiet.
    let lo = (s.jobs / 20).max(1);
    let hi = s.jobs.saturating_sub(s.jobs / 20).max(lo + 1);
    let at = |rng: &mut Rng| lo + rng.below((hi - lo) as u64) as usize;
    let killable = s.boards.saturating_sub(s.unkilled).max(1);
    for _ in 0..s.kills {
        let board = rng.below(killable as u64) as usize;
        let down_ms = 500 + rng.below(2500);
        out.push((at(rng), Chaos::Kill { board, down_ms }));
    }
    for _ in 0..s.broker_restarts {
        out.push((at(rng), Chaos::BrokerRestart));
    }
    for _ in 0..s.disk_full_episodes {
        let start = at(rng);
        let len = 3 + rng.below(6) as usize;
        out.push((start, Chaos::DiskFull));
        out.push(((start + len).min(s.jobs), Chaos::SpaceBack));
    }
    out.sort_by_key(|(i, c)| (*i, matches!(c, Chaos::DiskFull)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes() -> Sizes {
        Sizes {
            seed: 7,
            jobs: 200,
            boards: 3,
            kills: 4,
            broker_restarts: 2,
            disk_full_episodes: 2,
            unkilled: 1,
        }
    }

    #[test]
    fn same_seed_same_plan() {
        let a = jobs(&sizes(), &mut Rng::new(7));
        let b = jobs(&sizes(), &mut Rng::new(7));
        assert_eq!(
            a.iter().map(|j| &j.payload).collect::<Vec<_>>(),
            b.iter().map(|j| &j.payload).collect::<Vec<_>>()
        );
        assert!(a.iter().any(|j| j.kind == Kind::Malformed));
        assert!(a.iter().any(|j| j.kind == Kind::Perplexity));
        assert!(a.iter().any(|j| j.cancel_after_ms.is_some()));
    }

    #[test]
    fn chaos_spares_the_unkilled_board_and_pairs_disk_full() {
        let c = chaos(&sizes(), &mut Rng::new(7));
        assert!(c
            .iter()
            .all(|(_, e)| !matches!(e, Chaos::Kill { board, .. } if *board >= 2)));
        let full = c.iter().filter(|(_, e)| *e == Chaos::DiskFull).count();
        let back = c.iter().filter(|(_, e)| *e == Chaos::SpaceBack).count();
        assert_eq!((full, back), (2, 2));
    }
}
