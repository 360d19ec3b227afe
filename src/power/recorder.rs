//! A job's recording: every sample from a start time on, copied out of the sampler's
//! rings while the job runs, so a job longer than the ring (at 1 kHz a 16 Ki ring
//! holds ~16 s) loses nothing, and the ring itself stays small.
//!
//! One thread per recording wakes every `every` (default 250 ms) and appends what the
//! sampler threads pushed since its last read ([`SamplerHandle::read_since`]).
//! Samples the ring overwrote before a read (the recorder was starved for longer than
//! the ring lasts) become gaps with the reason, so the energy math marks the job
//! incomplete instead of integrating across the hole.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::sampler::{Gap, RingCursor, SamplerHandle};
use super::{PowerError, Sample};

/// How often a recording drains the rings unless told otherwise.
pub const DEFAULT_EVERY: Duration = Duration::from_millis(250);

/// What a recording collected.
#[derive(Debug, Clone, Default)]
pub struct Recorded {
    /// Samples from the start time on, sorted by `(t_ns, rail)`.
    pub samples: Vec<Sample>,
    /// Spans whose samples the ring overwrote before they were read.
    pub lost: Vec<Gap>,
}

struct State {
    cursor: RingCursor,
    samples: Vec<Sample>,
    lost: Vec<Gap>,
}

impl State {
    fn drain(&mut self, sampler: &SamplerHandle) {
        let lost = sampler.read_since(&mut self.cursor, &mut self.samples);
        self.lost.extend(lost);
    }
}

/// A running recording; [`Recorder::finish`] stops it (joining its thread: call it
/// off the async runtime) and returns the samples. Dropped unfinished, it tells its
/// thread to stop and discards them.
pub struct Recorder {
    sampler: Arc<SamplerHandle>,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Recorder {
    /// Starts recording: the samples with `t_ns() >= from_ns` still in the rings
    /// (the idle baseline before a job), then everything pushed from now on, drained
    /// every `every`. Stops with `parent` too.
    pub fn start(
        sampler: Arc<SamplerHandle>,
        from_ns: u64,
        every: Duration,
        parent: &CancellationToken,
    ) -> Result<Recorder, PowerError> {
        let (samples, cursor) = sampler.window_from(from_ns);
        let state = Arc::new(Mutex::new(State {
            cursor,
            samples,
            lost: Vec::new(),
        }));
        let stop = parent.child_token();
        let thread = {
            let (sampler, state, stop) = (sampler.clone(), state.clone(), stop.clone());
            std::thread::Builder::new()
                .name("ew-recorder".into())
                .spawn(move || {
                    while !stop.is_cancelled() {
                        std::thread::park_timeout(every);
                        lock(&state).drain(&sampler);
                    }
                })
                .map_err(PowerError::Thread)?
        };
        Ok(Recorder {
            sampler,
            state,
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the drain thread, takes the last samples and returns everything,
    /// sorted by `(t_ns, rail)`.
    pub fn finish(mut self) -> Recorded {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        let mut st = lock(&self.state);
        st.drain(&self.sampler);
        let mut samples = std::mem::take(&mut st.samples);
        // Each thread's samples are in order; several threads interleave.
        samples.sort_by_key(|s| (s.t_ns(), s.rail));
        Recorded {
            samples,
            lost: std::mem::take(&mut st.lost),
        }
    }
}

impl Drop for Recorder {
    /// Unfinished (a job that failed or was requeued): stop the thread without
    /// waiting for it, so dropping never blocks the async runtime; it owns only
    /// shared handles and exits on its next wake-up, which the unpark makes now.
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
        }
    }
}
