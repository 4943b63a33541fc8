//! Each worker's counters, in a small file it maps: a store is in the page cache the
//! moment it is made, so the runner reads the last value even of a SIGKILLed worker.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

/// Counters in a stats file, by index.
pub mod slot {
    /// Work done: messages committed (producers) or received (consumers), permits
    /// taken, increments acknowledged, lifecycle cycles. What the watchdog watches.
    pub const PROGRESS: usize = 0;
    /// Failures seen by the worker (lifecycle attempts that did not resolve, mutex
    /// overlaps, permit anomalies).
    pub const FAILURES: usize = 1;
    /// Retries that resolved (lifecycle), abandoned locks taken over (mutex).
    pub const RETRIES: usize = 2;
    /// Set to 1 by a worker that stopped cleanly when told to.
    pub const CLEAN_EXIT: usize = 4;
    /// Broadcast: the ring position a publisher started at or a subscriber joined at.
    pub const BASE: usize = 5;
    /// Broadcast: set to 1 once `BASE` is stored.
    pub const JOINED: usize = 6;
    /// Number of counters.
    pub const COUNT: usize = 8;
}

const BYTES: usize = slot::COUNT * 8;

/// A worker's own counters, mapped read-write.
#[derive(Debug)]
pub struct Stats {
    map: MmapMut,
}

impl Stats {
    /// Creates the stats file at `path`, all counters 0.
    pub fn create(path: &Path) -> io::Result<Stats> {
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.set_len(BYTES as u64)?;
        // SAFETY: the file is ours (created just now, exclusively) and only read by
        // others; it is never truncated while mapped.
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok(Stats { map })
    }

    fn cell(&self, i: usize) -> &AtomicU64 {
        assert!(i < slot::COUNT);
        let base = self.map.as_ptr() as *const AtomicU64;
        // SAFETY: the map is page-aligned and BYTES long, so `i < COUNT` is inside and
        // 8-aligned; it lives as long as `self`.
        unsafe { &*base.add(i) }
    }

    /// Sets counter `i`.
    pub fn set(&self, i: usize, v: u64) {
        // SYNC POINT: Release pairs with nothing in-process; the runner reads the file
        // after the worker is gone, or as a snapshot for progress.
        self.cell(i).store(v, Ordering::Release);
    }

    /// Adds 1 to counter `i`.
    pub fn bump(&self, i: usize) {
        self.cell(i).fetch_add(1, Ordering::Release);
    }

    /// Counter `i`.
    #[cfg(test)]
    pub fn get(&self, i: usize) -> u64 {
        self.cell(i).load(Ordering::Acquire)
    }
}

/// Reads a worker's counters from its file (zeros for a file not there yet).
pub fn read(path: &Path) -> [u64; slot::COUNT] {
    let mut out = [0; slot::COUNT];
    if let Ok(bytes) = std::fs::read(path) {
        for (i, c) in bytes.chunks_exact(8).take(slot::COUNT).enumerate() {
            out[i] = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_reach_the_file() {
        let dir = std::env::temp_dir().join(format!("tally-stress-stats-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.stats");
        let s = Stats::create(&path).unwrap();
        s.set(slot::PROGRESS, 41);
        s.bump(slot::PROGRESS);
        s.bump(slot::FAILURES);
        let got = read(&path);
        assert_eq!((got[slot::PROGRESS], got[slot::FAILURES]), (42, 1));
        assert_eq!(s.get(slot::PROGRESS), 42);
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
