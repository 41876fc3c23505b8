//! CPU time actually spent for a task, in wasm and in its host calls.
//!
//! Counting epoch ticks would charge a task for time it spent blocked (a
//! sleeping guest sees the deadline pass on its next instruction) and miss
//! time spent in synchronous host calls (the epoch is checked only in wasm).
//! Instead every poll of a task's future is timed: wasm runs on a fiber
//! inside that poll, and so do synchronous host functions, while a task
//! that waits (a sleep, I/O) is not being polled. The time of a poll is
//! read from the monotonic clock (tens of nanoseconds, through the vDSO)
//! rather than the thread's CPU clock (a system call, over a microsecond
//! here): a poll that the OS preempts is charged in full, which errs
//! against the task, never for it. A called agent's task is metered by its
//! own [`Metered`] inside its caller's poll; its time is charged to it
//! alone, not to the caller as well.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::usage::UsageCounters;

/// The monotonic clock, in nanoseconds.
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a valid timespec; CLOCK_MONOTONIC
    // always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

thread_local! {
    /// CPU time of metered tasks polled inside the current poll (called
    /// agents), to take out of their caller's share.
    static NESTED_NS: Cell<u64> = const { Cell::new(0) };
}

pin_project_lite::pin_project! {
    /// A task's future, charging the time of each poll to its counters.
    pub(crate) struct Metered<F> {
        #[pin]
        inner: F,
        usage: Arc<UsageCounters>,
    }
}

impl<F: Future> Metered<F> {
    pub fn new(inner: F, usage: Arc<UsageCounters>) -> Self {
        Metered { inner, usage }
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let outer_nested = NESTED_NS.with(|n| n.replace(0));
        let start = now_ns();
        this.usage.poll_started_ns.store(start, Relaxed);
        let result = this.inner.poll(cx);
        let elapsed = now_ns().saturating_sub(start);
        let nested = NESTED_NS.with(|n| n.replace(outer_nested + elapsed));
        this.usage.cpu_ns.fetch_add(elapsed.saturating_sub(nested), Relaxed);
        result
    }
}

/// CPU time the task has spent so far, including the poll in progress on
/// this thread (call from inside that poll, e.g. the epoch callback).
pub(crate) fn spent_ns(usage: &UsageCounters) -> u64 {
    let in_poll = now_ns().saturating_sub(usage.poll_started_ns.load(Relaxed));
    usage.cpu_ns.load(Relaxed) + in_poll.saturating_sub(NESTED_NS.with(Cell::get))
}

/// This thread's CPU clock, in nanoseconds (a system call: for work that
/// takes far longer than that, such as a durable commit).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into a valid timespec; the thread CPU
    // clock always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Runs `f` on a blocking thread for the task and charges the CPU it used
/// (the thread's CPU clock: a commit's wait for the disk is not CPU).
pub(crate) fn charged<R>(usage: &UsageCounters, f: impl FnOnce() -> R) -> R {
    let start = thread_cpu_ns();
    let result = f();
    usage.cpu_ns.fetch_add(thread_cpu_ns().saturating_sub(start), Relaxed);
    result
}

/// Lowers the calling thread's scheduling priority (nice 5): on Linux a
/// thread has a priority of its own, so threads running agents yield the
/// CPU to the host's serving threads when both want it.
#[cfg(feature = "daemon")]
pub(crate) fn lower_thread_priority() {
    // SAFETY: plain system call on the calling thread (`who` = 0).
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 5) };
}

/// Charges CPU spent for a task on a thread other than the one running it
/// (a storage commit on a blocking thread, say) to the task's CPU limit.
#[derive(Clone, Default)]
pub struct CpuMeter(Option<Arc<UsageCounters>>);

impl CpuMeter {
    pub(crate) fn of(usage: Arc<UsageCounters>) -> CpuMeter {
        CpuMeter(Some(usage))
    }

    /// A meter that charges nothing (work done for no task).
    pub fn none() -> CpuMeter {
        CpuMeter(None)
    }

    /// Runs `f` on this thread and charges the CPU it used (the thread's
    /// CPU clock: waiting for a disk or a network is not CPU).
    pub fn charge<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.0 {
            Some(usage) => charged(usage, f),
            None => f(),
        }
    }
}
