//! Handing freed memory back to the system.
//!
//! The server's own allocations go through jemalloc (the binary's global
//! allocator, `main.rs`), whose background threads return freed pages on
//! their own. What C libraries allocate (SQLite's page cache and
//! statements) still comes from glibc's allocator, which keeps what is
//! freed in its arenas and returns pages to the system only from the top of
//! an arena: with glibc for everything, the hour-long soak in BENCHMARKS.md
//! grew 2.7 % with a live heap that stayed flat, and one `malloc_trim(0)`
//! at its end took the anonymous RSS from 5.8 to 2.2 MiB. So a task still
//! calls it every `--trim-interval`, for what is left on glibc's heap.
//!
//! Written here rather than taken from a crate: `malloc_trim` is one call
//! with no pointers, and the crates that expose it (`libc`) expose it as an
//! `unsafe` FFI declaration only. This module is the workspace's one `unsafe`
//! block (the lint is `deny` for it, not `forbid`).

use std::time::Duration;

/// Asks the allocator to return the free pages of every arena to the system.
/// Whether it returned any (glibc's answer); `false` where the allocator is
/// not glibc's (musl, other systems), which return memory on their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn release_freed_memory() -> bool {
    // SAFETY: `malloc_trim` takes no pointer and touches only the
    // allocator's own state, under the allocator's locks; any thread may
    // call it at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Asks the allocator to return the free pages of every arena to the system.
/// Elsewhere than glibc there is nothing to ask: `false`.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_freed_memory() -> bool {
    false
}

/// Starts the task that calls [`release_freed_memory`] every `interval`
/// (none when `interval` is zero). The call walks every arena under its
/// lock, a fraction of a millisecond for this server's few MiB, so it runs
/// on the blocking pool, away from the runtime's workers.
pub fn spawn_trimmer(interval: Duration) -> Option<tokio::task::JoinHandle<()>> {
    if interval.is_zero() {
        return None;
    }
    Some(tokio::spawn(async move {
        let mut every = tokio::time::interval(interval);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let released = tokio::task::spawn_blocking(release_freed_memory).await;
            tracing::debug!(
                released = released.unwrap_or(false),
                "asked the allocator to return freed memory"
            );
        }
    }))
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// The process's anonymous resident memory, in bytes.
    fn rss_anon() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let line = status.lines().find(|l| l.starts_with("RssAnon:")).expect("an RssAnon line");
        let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("kB");
        kib * 1024
    }

    #[test]
    fn freed_memory_kept_by_live_blocks_between_it_goes_back_to_the_system() {
        // On a thread of its own (an arena of its own, like a worker's):
        // 64 MiB in 4 KiB blocks, then all freed but every 64th, so no
        // arena top is free and nothing is returned by `free` alone.
        let (kept, before) = std::thread::spawn(|| {
            let blocks: Vec<Box<[u8; 4096]>> =
                (0..16_384).map(|_| Box::new([1_u8; 4096])).collect();
            let kept: Vec<Box<[u8; 4096]>> = blocks.into_iter().step_by(64).collect();
            (kept, rss_anon())
        })
        .join()
        .expect("the allocating thread");
        assert!(release_freed_memory(), "glibc returned nothing");
        let after = rss_anon();
        assert!(
            before.saturating_sub(after) > 32 << 20,
            "RssAnon {before} B before the trim, {after} B after: less than 32 MiB returned"
        );
        drop(kept);
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_interval_starts_no_trimmer() {
        assert!(spawn_trimmer(Duration::ZERO).is_none());
        let trimmer = spawn_trimmer(Duration::from_secs(60)).expect("a trimmer");
        trimmer.abort();
    }
}
