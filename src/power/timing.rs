//! Precise sleeps and per-thread CPU time, on the one monotonic clock.

use crate::clock::monotonic_ns;

/// Sleeps until CLOCK_MONOTONIC reaches `deadline_ns` (absolute `clock_nanosleep`,
/// so a late wake-up does not add to the next one). Returns at once if it has passed.
pub fn sleep_until_ns(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    loop {
        // SAFETY: `ts` is a valid timespec; the remaining-time pointer may be null
        // with TIMER_ABSTIME.
        let rc = unsafe {
            libc::clock_nanosleep(
                libc::CLOCK_MONOTONIC,
                libc::TIMER_ABSTIME,
                &ts,
                std::ptr::null_mut(),
            )
        };
        // EINTR: a signal woke us early; sleep again to the same absolute deadline.
        if rc != libc::EINTR {
            break;
        }
    }
}

thread_local! {
    /// How late this thread's wake-ups have been running, ns (moving estimate).
    static WAKE_LATENESS_NS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Sleeps until about `deadline_ns`, asking the kernel to wake us early by this
/// thread's usual wake-up lateness, so the mean wake-up lands on the deadline
/// instead of ~50 µs after it (a virtualised timer's latency, or the default timer
/// slack). No spinning: a sleep that ends a few µs early is accepted, the estimate
/// tracks the error.
pub fn precise_sleep_until_ns(deadline_ns: u64) {
    let now = monotonic_ns();
    if now >= deadline_ns {
        return;
    }
    let lateness = WAKE_LATENESS_NS.with(|c| c.get());
    let target = deadline_ns.saturating_sub(lateness).max(now);
    sleep_until_ns(target);
    let woke = monotonic_ns();
    // Lateness relative to the target we asked for; a quarter-step moving average,
    // capped so one descheduled wake-up cannot make later sleeps absurdly short.
    WAKE_LATENESS_NS.with(|c| {
        let est = c.get();
        // A wake-up delayed by preemption says nothing about timer latency: clip
        // each observation to twice the estimate (+20 µs) before averaging.
        let late = woke
            .saturating_sub(target)
            .min(est * 2 + 20_000)
            .min(200_000);
        c.set((est * 3 + late) / 4);
    });
}

/// Sleeps for `ns` from now.
pub fn sleep_ns(ns: u64) {
    sleep_until_ns(monotonic_ns().saturating_add(ns));
}

/// Shrinks this thread's timer slack to 1 ns. Linux's default 50 µs slack would make
/// every sub-millisecond sleep late by up to 50 µs, a twentieth of an INA219 cycle.
pub fn set_precise_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes an unsigned long and affects this thread only.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// CPU time this thread has used, ns (CLOCK_THREAD_CPUTIME_ID).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid, writable timespec; this clock exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Asks for SCHED_FIFO at `priority` for this thread; needs CAP_SYS_NICE or an
/// rtprio limit. Returns the OS error when refused (the caller logs and goes on).
pub fn set_realtime_priority(priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 = this thread; `param` is valid for the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Pins this thread to one CPU.
pub fn pin_to_cpu(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET writes within it for
    // cpu < CPU_SETSIZE, checked first.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleep_until_is_not_early() {
        set_precise_timer_slack();
        let t0 = monotonic_ns();
        sleep_until_ns(t0 + 200_000);
        let t1 = monotonic_ns();
        assert!(t1 - t0 >= 200_000, "woke after {} ns", t1 - t0);
    }

    #[test]
    fn precise_sleep_lands_near_the_deadline() {
        let mut late_ns: Vec<i64> = (0..50)
            .map(|_| {
                let d = monotonic_ns() + 300_000;
                precise_sleep_until_ns(d);
                monotonic_ns() as i64 - d as i64
            })
            .collect();
        late_ns.sort_unstable();
        // The median, not the mean: on a loaded 2-core CI machine a few sleeps are
        // preempted for milliseconds (other test threads), which says nothing about the
        // compensation. Median well under the uncompensated ~50 µs (loose: shared machines).
        let median = late_ns[late_ns.len() / 2];
        assert!(median < 150_000, "median lateness {median} ns");
    }

    #[test]
    fn thread_cpu_time_advances_with_work() {
        let a = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_ns() > a);
    }
}
