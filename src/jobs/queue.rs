//! The local job queue: bounded, one job running at a time (a board is saturated by
//! one generation), cancel by id whether queued or running.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::journal::Reply;
use super::protocol::Job;

/// A job waiting for the engine.
#[derive(Debug, Clone)]
pub struct QueuedJob {
    /// The validated job.
    pub job: Job,
    /// Response Topic / Correlation Data to answer on.
    pub reply: Reply,
    /// CLOCK_MONOTONIC when it was accepted (for `queue_ms`).
    pub accepted_ns: u64,
    /// How many times it was started before (crash recovery).
    pub attempts: u32,
}

/// The queue is full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the job queue is full ({capacity} jobs waiting); retry later or send the job to another board"
)]
pub struct QueueFull {
    /// The configured capacity (`limits.queue_capacity`).
    pub capacity: usize,
}

/// What [`JobQueue::cancel`] did.
#[derive(Debug)]
pub enum CancelOutcome {
    /// The job was waiting; it is removed and returned.
    Queued(Box<QueuedJob>),
    /// The job is running; its token is canceled (the engine stops between tokens).
    Running,
    /// No such job here (finished already, or never seen).
    NotFound,
}

#[derive(Default)]
struct Inner {
    queue: VecDeque<QueuedJob>,
    running: Option<(String, CancellationToken)>,
    closed: bool,
}

/// A bounded FIFO with a single consumer (the runner).
pub struct JobQueue {
    /// Queue and running job, behind a short-held lock.
    inner: Mutex<Inner>,
    /// Wakes the runner when a job arrives or the queue closes.
    notify: Notify,
    /// Most jobs waiting (not counting the running one).
    capacity: usize,
}

impl JobQueue {
    /// An empty queue holding at most `capacity` waiting jobs.
    pub fn new(capacity: usize) -> Self {
        JobQueue {
            inner: Mutex::new(Inner::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock means a panic while holding it; the data is still a queue.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a job; returns its position (0 = next). `force` ignores the capacity
    /// (jobs recovered from the journal were already accepted).
    pub fn push(&self, job: QueuedJob, force: bool) -> Result<usize, QueueFull> {
        let mut g = self.lock();
        if !force && g.queue.len() >= self.capacity {
            return Err(QueueFull {
                capacity: self.capacity,
            });
        }
        g.queue.push_back(job);
        let pos = g.queue.len() - 1 + usize::from(g.running.is_some());
        drop(g);
        self.notify.notify_one();
        Ok(pos)
    }

    /// Waits for the next job and marks it running with a fresh cancel token (a child
    /// of `parent`). `None` once the queue is closed or `parent` is canceled.
    pub async fn next(&self, parent: &CancellationToken) -> Option<(QueuedJob, CancellationToken)> {
        loop {
            let notified = self.notify.notified();
            {
                let mut g = self.lock();
                if g.closed {
                    return None;
                }
                if let Some(job) = g.queue.pop_front() {
                    let token = parent.child_token();
                    g.running = Some((job.job.id.clone(), token.clone()));
                    return Some((job, token));
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = parent.cancelled() => return None,
            }
        }
    }

    /// Clears the running job.
    pub fn finish_running(&self) {
        self.lock().running = None;
    }

    /// Cancels a job by id.
    pub fn cancel(&self, id: &str) -> CancelOutcome {
        let mut g = self.lock();
        if let Some(pos) = g.queue.iter().position(|j| j.job.id == id) {
            return match g.queue.remove(pos) {
                Some(j) => CancelOutcome::Queued(Box::new(j)),
                None => CancelOutcome::NotFound,
            };
        }
        match &g.running {
            Some((rid, token)) if rid == id => {
                token.cancel();
                CancelOutcome::Running
            }
            _ => CancelOutcome::NotFound,
        }
    }

    /// True when `id` is waiting or running.
    pub fn contains(&self, id: &str) -> bool {
        let g = self.lock();
        g.running.as_ref().is_some_and(|(r, _)| r == id) || g.queue.iter().any(|j| j.job.id == id)
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The running job's id.
    pub fn running(&self) -> Option<String> {
        self.lock().running.as_ref().map(|(id, _)| id.clone())
    }

    /// Stops handing out jobs (shutdown); waiting jobs stay in the journal.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::{GenerateOptions, GenerateRequest, PromptInput};
    use crate::jobs::protocol::TraceLevel;

    fn qj(id: &str) -> QueuedJob {
        QueuedJob {
            job: Job {
                id: id.into(),
                request: GenerateRequest {
                    model: "m".into(),
                    input: PromptInput::Prompt("x".into()),
                    options: GenerateOptions::default(),
                    keep_alive_s: None,
                },
                stream: None,
                trace: TraceLevel::None,
                quality: None,
                power_mode: None,
                settle: None,
            },
            reply: Reply::default(),
            accepted_ns: 0,
            attempts: 0,
        }
    }

    #[tokio::test]
    async fn fifo_bounded_and_cancelable() {
        let q = JobQueue::new(2);
        let root = CancellationToken::new();
        assert_eq!(q.push(qj("a"), false).unwrap(), 0);
        assert_eq!(q.push(qj("b"), false).unwrap(), 1);
        assert!(q.push(qj("c"), false).is_err());
        assert!(q.push(qj("c"), true).is_ok());
        let (a, tok) = q.next(&root).await.unwrap();
        assert_eq!(a.job.id, "a");
        assert_eq!(q.running().as_deref(), Some("a"));
        assert!(matches!(q.cancel("a"), CancelOutcome::Running));
        assert!(tok.is_cancelled());
        assert!(matches!(q.cancel("b"), CancelOutcome::Queued(_)));
        assert!(matches!(q.cancel("zz"), CancelOutcome::NotFound));
        q.finish_running();
        let (c, _) = q.next(&root).await.unwrap();
        assert_eq!(c.job.id, "c");
        q.close();
        assert!(q.next(&root).await.is_none());
    }
}
