//! Handing freed heap memory back to the operating system.
//!
//! glibc's allocator returns only the top of its heap by itself. A burst of requests (a few
//! thousand SSE streams opening at once) leaves megabytes of freed chunks between the ones
//! still live, and the process stays resident at the burst's peak for as long as the
//! streams it opened stay open. jemalloc and mimalloc purge such pages after a while; this
//! does the same for glibc. Every [`PERIOD`], when the heap holds more than [`TRIM_AT`]
//! free bytes, `malloc_trim` gives the free whole pages back (`madvise`), and what is
//! allocated there next faults a fresh page in. A trim walks every free chunk and makes a
//! system call for each, so it runs again only once more memory has been freed since:
//! free bytes that stay free are not handed back twice.
//!
//! Elsewhere than glibc this does nothing.

use std::time::Duration;

use tokio::sync::watch;

/// How often the heap's free bytes are looked at.
const PERIOD: Duration = Duration::from_secs(2);
/// Free bytes in the heap above which they are handed back.
const TRIM_AT: usize = 1024 * 1024;

/// Trims the heap every [`PERIOD`] while it holds more than [`TRIM_AT`] free bytes that were
/// not there at the last trim, until `stop` turns true.
pub async fn trim_loop(mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut due = Due::default();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = crate::listener::stopped(&mut stop) => return,
        }
        let free = glibc::free_bytes();
        if due.trim(free) {
            let started = std::time::Instant::now();
            let released = glibc::trim();
            tracing::debug!(free, released, took = ?started.elapsed(), "trimmed the heap");
        }
    }
}

/// Whether a trim is due.
#[derive(Debug, Default)]
struct Due {
    /// The fewest free bytes seen since the last trim: handed back already, or reused since.
    floor: usize,
}

impl Due {
    /// With `free` bytes free now: more than [`TRIM_AT`], and half of that freed since the
    /// last trim.
    fn trim(&mut self, free: usize) -> bool {
        self.floor = self.floor.min(free);
        if free > TRIM_AT && free - self.floor > TRIM_AT / 2 {
            self.floor = free;
            return true;
        }
        false
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
mod glibc {
    /// Bytes in free chunks across the allocator's arenas.
    pub fn free_bytes() -> usize {
        // SAFETY: mallinfo2 only reads the allocator's own state, under its locks; it has
        // no preconditions (glibc 2.33 and later).
        unsafe { libc::mallinfo2() }.fordblks
    }

    /// Gives free whole pages back to the OS; whether any were.
    pub fn trim() -> bool {
        // SAFETY: malloc_trim has no preconditions; live allocations are not touched.
        unsafe { libc::malloc_trim(0) != 0 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod glibc {
    pub fn free_bytes() -> usize {
        0
    }

    pub fn trim() -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    #[test]
    fn a_trim_is_due_once_per_burst_of_freed_memory() {
        let mut due = Due::default();
        assert!(!due.trim(MIB / 2), "too little free");
        assert!(due.trim(8 * MIB), "a burst freed 8 MiB");
        assert!(!due.trim(8 * MIB), "nothing freed since");
        assert!(!due.trim(8 * MIB + MIB / 4), "a little freed since");
        // Reused, then freed again: the pages are back in memory.
        assert!(!due.trim(5 * MIB));
        assert!(due.trim(7 * MIB));
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod glibc_tests {
    use super::glibc;

    #[test]
    fn freed_chunks_between_live_ones_are_seen_and_handed_back() {
        // 32 MiB in 8 KiB blocks (below the mmap threshold: from the heap), then every
        // other one freed: holes between live chunks, which only a trim gives back.
        let blocks: Vec<Vec<u8>> = (0..4096).map(|i| vec![i as u8; 8192]).collect();
        let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(2).collect();
        assert!(
            glibc::free_bytes() >= 16 * 1024 * 1024,
            "the holes are free bytes"
        );
        assert!(glibc::trim(), "no page was handed back");
        assert!(kept.iter().enumerate().all(|(i, b)| b[0] == (2 * i) as u8));
    }
}
