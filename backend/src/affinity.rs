//! Pinning the runtime's worker threads to CPUs (`--pin-workers`).
//!
//! On two cores the kernel sometimes wakes the second worker on the core
//! the first is walking a room's sockets on, and leaves both there, sharing
//! it in 4 ms slices, for the whole fan-out (~100 ms at 10,000 hearts)
//! while the other core runs other work: a trace showed it in one tick in
//! five. A worker pinned to its own core cannot be stacked that way.
//!
//! Each worker pins itself the first time it parks (tokio's
//! `on_thread_park` runs on worker threads only, not on the blocking
//! pool's), taking the next CPU of the set the process was allowed to run
//! on, so a container's cpuset is respected.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The CPUs handed out to worker threads, in turn.
#[derive(Debug)]
pub struct Pinner {
    cpus: Vec<usize>,
    next: AtomicUsize,
}

thread_local! {
    /// Whether this thread has taken its CPU already.
    static PINNED: Cell<bool> = const { Cell::new(false) };
}

impl Pinner {
    /// Hands out `cpus` in turn (round robin when there are more workers).
    pub fn new(cpus: Vec<usize>) -> Self {
        Self { cpus, next: AtomicUsize::new(0) }
    }

    /// The CPUs this process may run on; `None` where that cannot be read.
    pub fn allowed() -> Option<Self> {
        allowed_cpus().filter(|cpus| !cpus.is_empty()).map(Self::new)
    }

    /// The CPU the next worker takes.
    pub fn next_cpu(&self) -> usize {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        self.cpus[turn % self.cpus.len()]
    }

    /// Pins the calling thread to the next CPU, once per thread: for
    /// `on_thread_park`, which runs every time a worker goes idle.
    pub fn pin_this_thread_once(&self) {
        if PINNED.with(|pinned| pinned.replace(true)) {
            return;
        }
        let cpu = self.next_cpu();
        if let Err(error) = pin_current_thread(cpu) {
            tracing::warn!(cpu, %error, "cannot pin a worker thread to its CPU");
        }
    }
}

#[cfg(target_os = "linux")]
fn allowed_cpus() -> Option<Vec<usize>> {
    use nix::sched::{CpuSet, sched_getaffinity};
    use nix::unistd::Pid;
    let set = sched_getaffinity(Pid::from_raw(0)).ok()?;
    Some((0..CpuSet::count()).filter(|&cpu| set.is_set(cpu).unwrap_or(false)).collect())
}

#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> Option<Vec<usize>> {
    None
}

#[cfg(target_os = "linux")]
fn pin_current_thread(cpu: usize) -> nix::Result<()> {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    set.set(cpu)?;
    sched_setaffinity(Pid::from_raw(0), &set)
}

#[cfg(not(target_os = "linux"))]
fn pin_current_thread(_cpu: usize) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn workers_take_the_allowed_cpus_in_turn() {
        let pinner = Pinner::new(vec![2, 5, 7]);
        let taken: Vec<usize> = (0..5).map(|_| pinner.next_cpu()).collect();
        assert_eq!(taken, [2, 5, 7, 2, 5]);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_pinned_thread_runs_on_its_cpu_only_and_pins_once() {
        let allowed = allowed_cpus().expect("the affinity of this process");
        assert!(!allowed.is_empty());
        let pinner = Arc::new(Pinner::new(allowed.clone()));
        let first = std::thread::spawn({
            let pinner = pinner.clone();
            move || {
                pinner.pin_this_thread_once();
                pinner.pin_this_thread_once();
                allowed_cpus()
            }
        })
        .join()
        .expect("the thread ran");
        assert_eq!(first, Some(vec![allowed[0]]), "pinned to the first allowed CPU");
        // The second call on that thread took no CPU: the next thread gets
        // the second.
        assert_eq!(pinner.next_cpu(), allowed[1 % allowed.len()]);
    }
}
