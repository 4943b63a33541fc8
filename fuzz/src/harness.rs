//! One fuzz input = `[n][n operation bytes][segment image]`. The image is written to
//! /dev/shm under a fresh name, opened as the target's kind (a typed error is the
//! expected answer to a bad image), and the operation bytes drive a bounded sequence of
//! non-blocking operations on it. The name is unlinked at the end whatever happened.
//!
//! Shared by the fuzz targets (`fuzz/`) and by `tests/fuzz_regressions.rs`, which replays
//! each crash the fuzzer found.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tally::{
    Broadcast, ByteBroadcast, ByteRing, Error, Event, LockError, MpmcByteRing, MpmcRing, Mutex,
    Options, Region, Ring, Semaphore, Start, admin,
};

/// The object kind a target opens the image as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A byte region (any segment: `Region::open` and `admin::inspect`).
    Region,
    /// An SPSC ring of `u64`.
    Ring,
    /// An SPSC byte ring.
    ByteRing,
    /// An MPMC ring of `u64`, or an MPMC byte ring if the image holds one.
    Mpmc,
    /// A semaphore (either flavour).
    Semaphore,
    /// A mutex over a `u64`.
    Mutex,
    /// An event (either reset mode).
    Event,
    /// A broadcast ring of `u64`, or a byte broadcast ring if the image holds one.
    Broadcast,
}

impl Target {
    /// Every target, with its directory name under `fuzz/corpus/`.
    pub const ALL: [(Target, &'static str); 8] = [
        (Target::Region, "region"),
        (Target::Ring, "ring"),
        (Target::ByteRing, "byte_ring"),
        (Target::Mpmc, "mpmc"),
        (Target::Semaphore, "semaphore"),
        (Target::Mutex, "mutex"),
        (Target::Event, "event"),
        (Target::Broadcast, "broadcast"),
    ];
}

/// Most operations one input may run.
pub const MAX_OPS: usize = 64;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The operation bytes, read one at a time; zeros once they run out.
pub struct Ops<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Ops<'_> {
    fn next(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(b)
    }

    fn arg(&mut self) -> u8 {
        self.next().unwrap_or(0)
    }

    fn arg16(&mut self) -> u16 {
        u16::from(self.arg()) | (u16::from(self.arg()) << 8)
    }
}

/// Unlinks the image's file when dropped.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Splits an input into its operation bytes and its image.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    let n = (n as usize).min(rest.len());
    rest.split_at(n)
}

/// Builds an input from operation bytes and an image (for the corpus generator).
pub fn input(ops: &[u8], image: &[u8]) -> Vec<u8> {
    let n = ops.len().min(255);
    let mut v = Vec::with_capacity(1 + n + image.len());
    v.push(n as u8);
    v.extend_from_slice(&ops[..n]);
    v.extend_from_slice(image);
    v
}

/// Runs one input against `target`.
pub fn run(target: Target, data: &[u8]) {
    let (ops, image) = split(data);
    let name = format!(
        "fz-{target:?}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let path = format!("/dev/shm/tally.{name}");
    let _unlink = Unlink(path.clone());
    let _ = std::fs::remove_file(&path);
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => panic!("create {path}: {e}"),
    };
    f.write_all(image).expect("write the image");
    drop(f);
    let opts = Options::default().timeout(Duration::from_millis(5));
    let mut ops = Ops { bytes: ops, at: 0 };
    let _ = admin::inspect_with(&name, &opts).map(|i| format!("{i:?}"));
    match target {
        Target::Region => region(&name, &opts, &mut ops),
        Target::Ring => ring(&name, &opts, &mut ops),
        Target::ByteRing => byte_ring(&name, &opts, &mut ops),
        Target::Mpmc => mpmc(&name, &opts, &mut ops),
        Target::Semaphore => semaphore(&name, &opts, &mut ops),
        Target::Mutex => mutex(&name, &opts, &mut ops),
        Target::Event => event(&name, &opts, &mut ops),
        Target::Broadcast => broadcast(&name, &opts, &mut ops),
    }
    let _ = admin::sweep(&name);
}

fn region(name: &str, opts: &Options, ops: &mut Ops) {
    let Ok(r) = Region::open_with(name, opts) else {
        let _ = admin::Holder::open(name, opts).map(|h| h.sweep());
        return;
    };
    let mut buf = [0u8; 64];
    for _ in 0..MAX_OPS {
        let Some(op) = ops.next() else { break };
        match op % 6 {
            0 => {
                let off = ops.arg16() as usize;
                let n = (ops.arg() as usize) % buf.len();
                let _ = r.read(off, &mut buf[..n]);
            }
            1 => {
                let off = ops.arg16() as usize;
                let n = (ops.arg() as usize) % buf.len();
                let _ = r.write(off, &buf[..n]);
            }
            2 => {
                let _ = r.sweep();
            }
            3 => {
                let _ = format!("{:?}", r.info());
            }
            4 => {
                let _ = Region::open_with(name, opts);
            }
            _ => {
                let _ = admin::Holder::open(name, opts).map(|h| h.try_sweep());
            }
        }
    }
}

fn ring(name: &str, opts: &Options, ops: &mut Ops) {
    let Ok(r) = Ring::<u64>::open_with(name, opts) else {
        return;
    };
    let mut p = None;
    let mut c = None;
    for i in 0..MAX_OPS as u64 {
        let Some(op) = ops.next() else { break };
        match op % 16 {
            0 => p = r.producer().ok(),
            1 => c = r.consumer().ok(),
            2 => {
                if let Some(p) = &mut p {
                    let _ = p.try_send(i);
                }
            }
            3 | 4 => {
                if let Some(p) = &mut p
                    && let Ok(mut s) = p.reserve()
                {
                    *s = i;
                    if op % 16 == 3 {
                        s.commit();
                    }
                }
            }
            5 => {
                if let Some(c) = &mut c {
                    let _ = c.try_recv();
                }
            }
            6 | 7 => {
                if let Some(c) = &mut c
                    && let Ok(s) = c.peek()
                {
                    let _ = *s;
                    if op % 16 == 6 {
                        s.release();
                    }
                }
            }
            8 => {
                let k = ops.arg() as usize;
                if let Some(c) = &mut c
                    && let Ok(b) = c.peek_many(k % 80)
                {
                    let _ = b.iter().fold(0u64, |a, x| a.wrapping_add(*x));
                    let n = ops.arg() as usize;
                    b.release_n(n % 80);
                }
            }
            9 => {
                let k = ops.arg() as usize;
                if let Some(p) = &mut p
                    && let Ok(mut b) = p.reserve_many(k % 80)
                {
                    b.fill_with(|j| j as u64);
                    let n = ops.arg() as usize;
                    b.commit_n(n % 80);
                }
            }
            10 => p = None,
            11 => c = None,
            12 => {
                let _ = r.sweep();
            }
            13 => {
                let _ = format!("{:?}", r.info());
            }
            14 => {
                if let Some(p) = &mut p {
                    let _ = (p.free_slots(), p.consumer_state(), p.is_disconnected());
                }
                if let Some(c) = &c {
                    let _ = (c.len(), c.producer_state(), c.is_disconnected());
                }
            }
            _ => {
                let _ = Ring::<u64>::open_with(name, opts).map(|h| h.sweep());
            }
        }
    }
}

fn byte_ring(name: &str, opts: &Options, ops: &mut Ops) {
    let Ok(r) = ByteRing::open_with(name, opts) else {
        return;
    };
    let mut p = None;
    let mut c = None;
    let msg = [0x5au8; 300];
    let mut buf = Vec::new();
    for _ in 0..MAX_OPS {
        let Some(op) = ops.next() else { break };
        match op % 14 {
            0 => p = r.producer().ok(),
            1 => c = r.consumer().ok(),
            2 => {
                let n = ops.arg() as usize;
                if let Some(p) = &mut p {
                    let _ = p.try_send(&msg[..n]);
                }
            }
            3 | 4 => {
                let n = ops.arg() as usize;
                if let Some(p) = &mut p
                    && let Ok(mut s) = p.reserve(n)
                {
                    s.fill(1);
                    if op % 14 == 3 {
                        s.commit();
                    }
                }
            }
            5 => {
                if let Some(c) = &mut c {
                    let _ = c.try_recv_into(&mut buf);
                }
            }
            6 | 7 => {
                if let Some(c) = &mut c
                    && let Ok(s) = c.peek()
                {
                    let _ = s.iter().map(|&b| b as usize).sum::<usize>();
                    if op % 14 == 6 {
                        s.release();
                    }
                }
            }
            8 => {
                let k = ops.arg() as usize;
                if let Some(c) = &mut c
                    && let Ok(b) = c.peek_many(k % 80)
                {
                    for j in 0..b.len() {
                        let _ = b.get(j).len();
                    }
                    b.release();
                }
            }
            9 => p = None,
            10 => c = None,
            11 => {
                let _ = r.sweep();
            }
            12 => {
                let _ = format!("{:?}", r.info());
                if let Some(c) = &c {
                    let _ = (c.len(), c.producer_state());
                }
            }
            _ => {
                let _ = ByteRing::open_with(name, opts).map(|h| h.sweep());
            }
        }
    }
}

fn mpmc(name: &str, opts: &Options, ops: &mut Ops) {
    let r = match MpmcRing::<u64>::open_with(name, opts) {
        Ok(r) => r,
        Err(Error::KindMismatch { .. }) => return mpmc_bytes(name, opts, ops),
        Err(_) => return,
    };
    let mut ps = [None, None];
    let mut cs = [None, None];
    for i in 0..MAX_OPS as u64 {
        let Some(op) = ops.next() else { break };
        let k = (op >> 4) as usize & 1;
        match op % 14 {
            0 => ps[k] = r.producer().ok(),
            1 => cs[k] = r.consumer().ok(),
            2 => {
                if let Some(p) = &mut ps[k] {
                    let _ = p.try_send(i);
                }
            }
            3 | 4 => {
                if let Some(p) = &mut ps[k]
                    && let Ok(mut s) = p.reserve()
                {
                    *s = i;
                    if op % 14 == 3 {
                        s.commit();
                    }
                }
            }
            5 => {
                if let Some(c) = &mut cs[k] {
                    let _ = c.try_recv();
                }
            }
            6 | 7 => {
                if let Some(c) = &mut cs[k]
                    && let Ok(s) = c.peek()
                {
                    let _ = *s;
                    if op % 14 == 6 {
                        s.release();
                    }
                }
            }
            8 => ps[k] = None,
            9 => cs[k] = None,
            10 => {
                let _ = r.sweep();
            }
            11 => {
                let _ = format!("{:?}", r.info());
            }
            12 => {
                if let Some(c) = &cs[k] {
                    let _ = (c.len(), c.producer_state(), c.is_disconnected());
                }
                if let Some(p) = &ps[k] {
                    let _ = (p.consumer_state(), p.is_disconnected());
                }
            }
            _ => {
                let _ = MpmcRing::<u64>::open_with(name, opts).map(|h| h.sweep());
            }
        }
    }
}

fn semaphore(name: &str, opts: &Options, ops: &mut Ops) {
    let Ok(s) = Semaphore::open_with(name, opts) else {
        return;
    };
    let mut permits = Vec::new();
    for _ in 0..MAX_OPS {
        let Some(op) = ops.next() else { break };
        match op % 10 {
            0 => {
                let n = u32::from(ops.arg()) | (u32::from(op >> 4) << 28);
                let _ = s.post(n);
            }
            1 => {
                let _ = s.try_wait();
            }
            2 => {
                if let Ok(p) = s.try_acquire() {
                    permits.push(p);
                }
            }
            3 => {
                permits.pop();
            }
            4 => {
                let _ = (s.count(), s.held(), s.max(), s.flavor());
            }
            5 => {
                let _ = s.sweep();
            }
            6 => {
                let _ = format!("{:?}", s.info());
            }
            7 => {
                let _ = s.wait_timeout(Duration::ZERO);
            }
            8 => {
                let _ = s.try_clone().map(|c| c.try_wait());
            }
            _ => {
                let _ = Semaphore::open_with(name, opts).map(|h| h.sweep());
            }
        }
    }
}

fn mutex(name: &str, opts: &Options, ops: &mut Ops) {
    let Ok(m) = Mutex::<u64>::open_with(name, opts) else {
        return;
    };
    let mut guard = None;
    for i in 0..MAX_OPS as u64 {
        let Some(op) = ops.next() else { break };
        match op % 9 {
            0 => {
                if guard.is_none() {
                    guard = match m.try_lock() {
                        Ok(g) => Some(g),
                        Err(LockError::Abandoned(g)) => Some(g),
                        Err(_) => None,
                    };
                }
            }
            1 => {
                if let Some(g) = &mut guard {
                    **g = g.wrapping_add(i);
                }
            }
            2 => {
                if let Some(g) = &mut guard {
                    let _ = g.is_abandoned();
                    g.clear_abandoned();
                }
            }
            3 => guard = None,
            4 => {
                let _ = m.is_abandoned();
            }
            5 => {
                let _ = m.sweep();
            }
            6 => {
                let _ = format!("{:?}", m.info());
            }
            7 => {
                if guard.is_none() {
                    let _ = m.lock_timeout(Duration::ZERO).map(|g| *g);
                }
            }
            _ => {
                let _ = m.try_clone().map(|c| c.try_lock().map(|g| *g).is_ok());
            }
        }
    }
}

fn event(name: &str, opts: &Options, ops: &mut Ops) {
    let Ok(e) = Event::open_with(name, opts) else {
        return;
    };
    for _ in 0..MAX_OPS {
        let Some(op) = ops.next() else { break };
        match op % 8 {
            0 => e.set(),
            1 => e.reset(),
            2 => {
                let _ = e.try_wait();
            }
            3 => {
                let _ = (e.is_set(), e.reset_mode());
            }
            4 => {
                let _ = e.wait_timeout(Duration::ZERO);
            }
            5 => {
                let _ = e.sweep();
            }
            6 => {
                let _ = format!("{:?}", e.info());
            }
            _ => {
                let _ = e.try_clone().map(|c| c.try_wait());
            }
        }
    }
}

fn mpmc_bytes(name: &str, opts: &Options, ops: &mut Ops) {
    let Ok(r) = MpmcByteRing::open_with(name, opts) else {
        return;
    };
    let mut ps = [None, None];
    let mut cs = [None, None];
    let msg = [0x3cu8; 300];
    let mut buf = Vec::new();
    for _ in 0..MAX_OPS {
        let Some(op) = ops.next() else { break };
        let k = (op >> 4) as usize & 1;
        match op % 12 {
            0 => ps[k] = r.producer().ok(),
            1 => cs[k] = r.consumer().ok(),
            2 => {
                let n = ops.arg() as usize;
                if let Some(p) = &mut ps[k] {
                    let _ = p.try_send(&msg[..n]);
                }
            }
            3 | 4 => {
                let n = ops.arg() as usize;
                if let Some(p) = &mut ps[k]
                    && let Ok(mut s) = p.reserve(n)
                {
                    s.fill(2);
                    if op % 12 == 3 {
                        s.commit();
                    }
                }
            }
            5 => {
                if let Some(c) = &mut cs[k] {
                    let _ = c.try_recv_into(&mut buf);
                }
            }
            6 | 7 => {
                if let Some(c) = &mut cs[k]
                    && let Ok(s) = c.peek()
                {
                    let _ = s.iter().map(|&b| b as usize).sum::<usize>();
                    if op % 12 == 6 {
                        s.release();
                    }
                }
            }
            8 => ps[k] = None,
            9 => cs[k] = None,
            10 => {
                let _ = (r.sweep(), format!("{:?}", r.info()));
            }
            _ => {
                if let Some(c) = &cs[k] {
                    let _ = (c.len(), c.producer_state(), c.is_disconnected());
                }
                if let Some(p) = &ps[k] {
                    let _ = (p.consumer_state(), p.is_disconnected());
                }
            }
        }
    }
}

fn start(op: u8) -> Start {
    if op & 0x80 != 0 {
        Start::Oldest
    } else {
        Start::Newest
    }
}

fn broadcast(name: &str, opts: &Options, ops: &mut Ops) {
    let b = match Broadcast::<u64>::open_with(name, opts) {
        Ok(b) => b,
        Err(Error::KindMismatch { .. }) => return byte_broadcast(name, opts, ops),
        Err(_) => return,
    };
    let mut p = None;
    let mut ss = [None, None];
    for i in 0..MAX_OPS as u64 {
        let Some(op) = ops.next() else { break };
        let k = (op >> 4) as usize & 1;
        match op % 14 {
            0 => p = b.publisher().ok(),
            1 => ss[k] = b.subscribe(start(op)).ok(),
            2 => {
                if let Some(p) = &mut p {
                    let _ = p.try_send(i);
                }
            }
            3 | 4 => {
                if let Some(p) = &mut p
                    && let Ok(mut s) = p.reserve()
                {
                    *s = i;
                    if op % 14 == 3 {
                        s.commit();
                    }
                }
            }
            5 => {
                let n = ops.arg() as usize;
                if let Some(p) = &mut p
                    && let Ok(mut w) = p.reserve_many(n % 80)
                {
                    w.fill_with(|j| j as u64);
                    let m = ops.arg() as usize;
                    w.commit_n(m % 80);
                }
            }
            6 => {
                if let Some(s) = &mut ss[k] {
                    let _ = s.try_recv();
                }
            }
            7 | 8 => {
                if let Some(s) = &mut ss[k]
                    && let Ok(r) = s.peek()
                {
                    let _ = *r;
                    if op % 14 == 7 {
                        let _ = r.release();
                    }
                }
            }
            9 => {
                let n = ops.arg() as usize;
                if let Some(s) = &mut ss[k]
                    && let Ok(r) = s.peek_many(n % 80)
                {
                    let _ = r.iter().fold(0u64, |a, x| a.wrapping_add(*x));
                    let _ = r.release();
                }
            }
            10 => p = None,
            11 => ss[k] = None,
            12 => {
                let _ = (b.sweep(), format!("{:?}", b.info()));
            }
            _ => {
                if let Some(s) = &ss[k] {
                    let _ = (s.position(), s.publisher_state(), s.is_disconnected());
                }
                if let Some(p) = &p {
                    let _ = (p.position(), p.subscribers());
                }
            }
        }
    }
}

fn byte_broadcast(name: &str, opts: &Options, ops: &mut Ops) {
    let Ok(b) = ByteBroadcast::open_with(name, opts) else {
        return;
    };
    let mut p = None;
    let mut ss = [None, None];
    let msg = [0x7eu8; 300];
    let mut buf = Vec::new();
    for _ in 0..MAX_OPS {
        let Some(op) = ops.next() else { break };
        let k = (op >> 4) as usize & 1;
        match op % 12 {
            0 => p = b.publisher().ok(),
            1 => ss[k] = b.subscribe(start(op)).ok(),
            2 => {
                let n = ops.arg() as usize;
                if let Some(p) = &mut p {
                    let _ = p.try_send(&msg[..n]);
                }
            }
            3 | 4 => {
                let n = ops.arg() as usize;
                if let Some(p) = &mut p
                    && let Ok(mut s) = p.reserve(n)
                {
                    s.fill(3);
                    if op % 12 == 3 {
                        s.commit();
                    }
                }
            }
            5 => {
                if let Some(s) = &mut ss[k] {
                    let _ = s.try_recv_into(&mut buf);
                }
            }
            6 | 7 => {
                if let Some(s) = &mut ss[k]
                    && let Ok(r) = s.peek()
                {
                    let _ = r.iter().map(|&b| b as usize).sum::<usize>();
                    if op % 12 == 6 {
                        let _ = r.release();
                    }
                }
            }
            8 => p = None,
            9 => ss[k] = None,
            10 => {
                let _ = (b.sweep(), format!("{:?}", b.info()));
            }
            _ => {
                if let Some(s) = &ss[k] {
                    let _ = (s.position(), s.publisher_state(), s.is_disconnected());
                }
                if let Some(p) = &p {
                    let _ = (p.position(), p.subscribers());
                }
            }
        }
    }
}
