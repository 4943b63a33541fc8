//! P6 against a live hostile peer: a child process keeps writing random values into the
//! header, holder table, ring positions, slot words and synchronization words of live
//! objects while honest threads (each with a handle of its own) use them.
//!
//! The honest side may get typed errors or wrong data; it must never panic, crash, read
//! outside a mapping, loop for ever or wait without a bound. Every honest operation runs
//! with a deadline, and a watchdog fails the test if one outlasts its deadline by more
//! than a margin (2 s; `TALLY_HOSTILE_MARGIN_MS`), not counting time the whole process
//! spent off the CPU.
//!
//! Knobs: `TALLY_HOSTILE_SECS` (default 5) sets the run's length, `TALLY_HOSTILE_SEED`
//! its seed (printed either way, so a failure reproduces the corrupter's writes).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tally::{
    ByteRing, Event, MpmcByteRing, MpmcRing, Mutex, Options, Reset, Ring, Semaphore, admin,
};

mod common;
use common::{
    Rng, TAG, child_command, child_role, first_line, say, shm_path, spawn_with_lines, unique,
};

/// Prefix of this file's object names.
const PREFIX: &str = "ho";
/// How far past its own deadline an honest operation may run before it counts as a hang
/// (scheduling on a loaded machine, one 10 ms liveness slice, a bounded sweep), unless
/// `TALLY_HOSTILE_MARGIN_MS` says otherwise.
fn margin() -> Duration {
    std::env::var("TALLY_HOSTILE_MARGIN_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_millis)
}
/// The timeout of each honest blocking operation.
const OP_TIMEOUT: Duration = Duration::from_millis(20);
/// The timeout of each honest open (it bounds the admin lock wait).
const OPEN_TIMEOUT: Duration = Duration::from_millis(100);

fn secs() -> u64 {
    std::env::var("TALLY_HOSTILE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

fn seed() -> u64 {
    std::env::var("TALLY_HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            (t ^ (u64::from(std::process::id()) << 32)) | 1
        })
}

fn opts() -> Options {
    Options::default().timeout(OPEN_TIMEOUT)
}

// --- the corrupting peer ------------------------------------------------------------------

/// Where a segment's parts are, read once before the corruption starts.
struct Target {
    file: std::fs::File,
    len: u64,
    table: (u64, u64),
    object: (u64, u64),
}

impl Target {
    fn open(name: &str) -> Target {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(shm_path(name))
            .unwrap_or_else(|e| panic!("open {name} to corrupt: {e}"));
        let len = file.metadata().unwrap().len();
        let mut buf = [0u8; 8];
        let mut u64_at = |off: u64| {
            file.read_exact_at(&mut buf, off).unwrap();
            u64::from_ne_bytes(buf)
        };
        let table_off = u64_at(24);
        let object_off = u64_at(32);
        let object_len = u64_at(40);
        let cap = u64_at(20) & 0xffff_ffff;
        assert!(object_off + object_len <= len && table_off < object_off);
        Target {
            file,
            len,
            table: (table_off, cap * 32),
            object: (object_off, object_len),
        }
    }

    /// One random write: an aligned u32 or u64, mostly into the object's first lines
    /// (positions, futex words, lock words) and the slot words, else into the header or
    /// the holder table. The value is random, a small number, all ones, or the word
    /// there plus or minus a little (which passes more checks).
    fn hit(&self, rng: &mut Rng) {
        let (base, span) = match rng.below(100) {
            0..20 => (0, 256),
            20..35 => self.table,
            35..75 => (self.object.0, self.object.1.min(1024)),
            _ => self.object,
        };
        let wide = rng.next() & 1 == 0;
        let width = if wide { 8 } else { 4 };
        if span < width {
            return;
        }
        let off = (base + rng.below((span - width + 1) as usize) as u64) & !(width - 1);
        if off + width > self.len {
            return;
        }
        let mut old = [0u8; 8];
        self.file
            .read_exact_at(&mut old[..width as usize], off)
            .unwrap();
        let old = u64::from_ne_bytes(old);
        let value = match rng.below(6) {
            0 => 0,
            1 => u64::MAX,
            2 => rng.below(4) as u64,
            3 => old.wrapping_add(1 + rng.below(3) as u64),
            4 => old.wrapping_sub(1 + rng.below(3) as u64),
            _ => rng.next(),
        };
        self.file
            .write_all_at(&value.to_ne_bytes()[..width as usize], off)
            .unwrap();
    }
}

/// Child role: corrupts the comma-separated objects named by the parent for `secs`
/// seconds (`ARG` = `seed:secs`), then prints `injected N`.
#[test]
fn child_corrupter() {
    let Some((names, arg)) = child_role("child_corrupter") else {
        return;
    };
    let (seed, secs) = arg.split_once(':').expect("seed:secs");
    let mut rng = Rng(seed.parse().expect("seed"));
    let secs: u64 = secs.parse().expect("secs");
    let targets: Vec<Target> = names.split(',').map(Target::open).collect();
    say("ready");
    let end = Instant::now() + Duration::from_secs(secs);
    let mut injected = 0u64;
    while Instant::now() < end {
        // A burst of writes, then a short pause so honest work also meets sane words
        // (pacing only; nothing waits on it).
        for _ in 0..1 + rng.below(8) {
            targets[rng.below(targets.len())].hit(&mut rng);
            injected += 1;
        }
        std::thread::sleep(Duration::from_micros(rng.below(500) as u64));
    }
    say(format!("injected {injected}"));
}

// --- the honest side ----------------------------------------------------------------------

/// One worker's operation in flight, as the watchdog sees it.
#[derive(Default)]
struct Watch {
    /// Start of the operation in flight, in ns since `Shared::epoch`, plus one; 0 when idle.
    started: AtomicU64,
    /// Its deadline, in ns after its start.
    budget: AtomicU64,
    /// `Shared::stalled` when it started.
    stalled_at_start: AtomicU64,
    what: StdMutex<&'static str>,
}

struct Shared {
    epoch: Instant,
    /// How long the watchdog itself was kept off the CPU, in ns, summed: on a loaded
    /// machine the whole process can stall for seconds, and an operation is only charged
    /// for the time the process ran.
    stalled: AtomicU64,
    stop: AtomicBool,
    watches: StdMutex<Vec<(String, Arc<Watch>)>>,
    hangs: StdMutex<Vec<String>>,
    outcomes: StdMutex<BTreeMap<String, u64>>,
    ops: AtomicU64,
    /// The longest any finished operation ran past its deadline, in ns (wall time).
    worst: AtomicU64,
}

/// A worker's view: times its operations and tallies their outcomes.
struct Ctx {
    shared: Arc<Shared>,
    watch: Arc<Watch>,
    outcomes: BTreeMap<String, u64>,
    ops: u64,
    rng: Rng,
}

/// Ends an operation's watch even if the operation panics (a panic is reported by the
/// join, not as a hang).
struct EndWatch<'a>(&'a Watch);

impl Drop for EndWatch<'_> {
    fn drop(&mut self) {
        // Relaxed: the watchdog only needs the value eventually; a stale read delays a
        // verdict by one poll, it cannot fake a hang (the start stays in the past).
        self.0.started.store(0, Ordering::Relaxed);
    }
}

impl Ctx {
    /// Runs `f` as one operation that must finish within `budget` (+ the margin).
    fn op<R>(&mut self, what: &'static str, budget: Duration, f: impl FnOnce() -> R) -> R {
        *self.watch.what.lock().unwrap() = what;
        self.watch
            .budget
            .store(budget.as_nanos() as u64, Ordering::Relaxed);
        let stalled = self.shared.stalled.load(Ordering::Relaxed);
        self.watch
            .stalled_at_start
            .store(stalled, Ordering::Relaxed);
        let now = self.shared.epoch.elapsed().as_nanos() as u64 + 1;
        self.watch.started.store(now, Ordering::Relaxed);
        let _end = EndWatch(&self.watch);
        let start = Instant::now();
        let r = f();
        let over = start.elapsed().saturating_sub(budget);
        self.shared
            .worst
            .fetch_max(over.as_nanos() as u64, Ordering::Relaxed);
        self.ops += 1;
        r
    }

    /// Tallies an outcome under `obj:Variant`.
    fn note<T, E: Debug>(&mut self, obj: &str, r: &Result<T, E>) {
        let key = match r {
            Ok(_) => return,
            Err(e) => {
                let dbg = format!("{e:?}");
                let variant = dbg.split([' ', '(', '{']).next().unwrap_or("").to_owned();
                format!("{obj}:{variant}")
            }
        };
        *self.outcomes.entry(key).or_default() += 1;
    }

    fn running(&self) -> bool {
        !self.shared.stop.load(Ordering::Relaxed)
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let mut all = self.shared.outcomes.lock().unwrap();
        for (k, v) in std::mem::take(&mut self.outcomes) {
            *all.entry(k).or_default() += v;
        }
        self.shared.ops.fetch_add(self.ops, Ordering::Relaxed);
    }
}

fn spawn_worker(
    shared: &Arc<Shared>,
    label: String,
    seed: u64,
    body: impl FnOnce(&mut Ctx) + Send + 'static,
) -> (String, JoinHandle<()>) {
    let watch = Arc::new(Watch::default());
    shared
        .watches
        .lock()
        .unwrap()
        .push((label.clone(), watch.clone()));
    let mut ctx = Ctx {
        shared: shared.clone(),
        watch,
        outcomes: BTreeMap::new(),
        ops: 0,
        rng: Rng(seed | 1),
    };
    let handle = std::thread::Builder::new()
        .name(label.clone())
        .spawn(move || body(&mut ctx))
        .expect("spawn honest worker");
    (label, handle)
}

/// Checks every watch each few ms; records each operation past its deadline + margin.
fn watchdog(shared: Arc<Shared>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut flagged = std::collections::BTreeSet::new();
        let tick = Duration::from_millis(20);
        let margin = margin();
        let mut last = Instant::now();
        while !shared.stop.load(Ordering::Relaxed) || !flagged.is_empty() || {
            // After the stop, keep watching until every worker went idle.
            let w = shared.watches.lock().unwrap();
            w.iter()
                .any(|(_, w)| w.started.load(Ordering::Relaxed) != 0)
        } {
            // A tick that came late by more than a few ms: the process was not running.
            let late = last
                .elapsed()
                .saturating_sub(tick + Duration::from_millis(5));
            last = Instant::now();
            let stalled = shared
                .stalled
                .fetch_add(late.as_nanos() as u64, Ordering::Relaxed)
                + late.as_nanos() as u64;
            let now = shared.epoch.elapsed().as_nanos() as u64 + 1;
            for (label, w) in shared.watches.lock().unwrap().iter() {
                let started = w.started.load(Ordering::Relaxed);
                if started == 0 {
                    continue;
                }
                let budget = w.budget.load(Ordering::Relaxed);
                let off_cpu = stalled.saturating_sub(w.stalled_at_start.load(Ordering::Relaxed));
                let over = Duration::from_nanos(now.saturating_sub(started))
                    .saturating_sub(Duration::from_nanos(budget + off_cpu));
                if over > margin && flagged.insert((label.clone(), started)) {
                    let what = *w.what.lock().unwrap();
                    let msg = format!("{label}: {what} still running {over:?} past its deadline");
                    eprintln!("watchdog: {msg}");
                    shared.hangs.lock().unwrap().push(msg);
                }
            }
            if !flagged.is_empty() && shared.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(tick);
        }
    })
}

/// Kills and reaps the corrupter if the test fails before it is done.
struct Reaper(std::process::Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Removes the objects at the end whatever state the corrupter left them in.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = admin::remove(name);
            let _ = std::fs::remove_file(shm_path(name));
        }
    }
}

const BYTES_MAX: usize = 48;

/// Runs the honest workers against live objects while a child corrupts them, for
/// `secs` seconds; returns the figures line. Panics on a hang or a worker's panic.
fn hostile_run(secs: u64, seed: u64) -> String {
    eprintln!("hostile run: seed {seed}, {secs} s (TALLY_HOSTILE_SEED={seed} reproduces)");
    let names: Vec<String> = [
        "ring", "bytes", "mpmc", "mpmcb", "sem", "sig", "mutex", "evauto", "evman",
    ]
    .iter()
    .map(|t| unique(PREFIX, t))
    .collect();
    let cleanup = Cleanup(names.clone());
    let n = |i: usize| names[i].clone();
    let o = opts();
    // The objects; these handles stay with the test thread until the end.
    let ring = Ring::<u64>::create_with(&n(0), 64, &o).unwrap();
    let bytes = ByteRing::create_with(&n(1), 64, BYTES_MAX, &o).unwrap();
    let mpmc = MpmcRing::<u64>::create_with(&n(2), 64, &o).unwrap();
    let mpmcb = MpmcByteRing::create_with(&n(3), 64, BYTES_MAX, &o).unwrap();
    let sem = Semaphore::create_resource_with(&n(4), 3, &o).unwrap();
    let sig = Semaphore::create_with(&n(5), 0, 16, &o).unwrap();
    let mutex = Mutex::<u64>::create_with(&n(6), 0, &o).unwrap();
    let ev_auto = Event::create_with(&n(7), Reset::Auto, &o).unwrap();
    let ev_manual = Event::create_with(&n(8), Reset::Manual, &o).unwrap();

    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        stalled: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        watches: StdMutex::new(Vec::new()),
        hangs: StdMutex::new(Vec::new()),
        outcomes: StdMutex::new(BTreeMap::new()),
        ops: AtomicU64::new(0),
        worst: AtomicU64::new(0),
    });
    let mut seeds = Rng(seed ^ 0x5eed);
    let mut workers = Vec::new();
    let t = OP_TIMEOUT;

    // SPSC typed ring: a producer and a consumer, each re-claiming its role when lost.
    {
        let r = Ring::<u64>::open_with(&n(0), &o).unwrap();
        workers.push(spawn_worker(
            &shared,
            "ring-prod".into(),
            seeds.next(),
            move |c| {
                while c.running() {
                    let got = c.op("Ring::producer", Duration::ZERO, || r.producer());
                    c.note("ring.producer", &got);
                    let Ok(mut p) = got else { continue };
                    for i in 0..64u64 {
                        match c.rng.below(3) {
                            0 => {
                                let res =
                                    c.op("Producer::send_timeout", t, || p.send_timeout(i, t));
                                c.note("ring.send", &res);
                            }
                            1 => {
                                let res = c.op("Producer::reserve+commit", Duration::ZERO, || {
                                    p.reserve().map(|mut s| {
                                        *s = i;
                                        s.commit()
                                    })
                                });
                                c.note("ring.reserve", &res);
                            }
                            _ => {
                                let res =
                                    c.op("Producer::try_send", Duration::ZERO, || p.try_send(i));
                                c.note("ring.try_send", &res);
                            }
                        }
                    }
                    c.op("drop Producer", Duration::ZERO, || drop(p));
                }
            },
        ));
        let r = Ring::<u64>::open_with(&n(0), &o).unwrap();
        workers.push(spawn_worker(
            &shared,
            "ring-cons".into(),
            seeds.next(),
            move |c| {
                while c.running() {
                    let got = c.op("Ring::consumer", Duration::ZERO, || r.consumer());
                    c.note("ring.consumer", &got);
                    let Ok(mut q) = got else { continue };
                    for _ in 0..64 {
                        match c.rng.below(4) {
                            0 => {
                                let res = c.op("Consumer::recv_timeout", t, || q.recv_timeout(t));
                                c.note("ring.recv", &res);
                            }
                            1 => {
                                let res = c.op("Consumer::peek_timeout+release", t, || {
                                    q.peek_timeout(t).map(|s| {
                                        let v = *s;
                                        s.release();
                                        v
                                    })
                                });
                                c.note("ring.peek", &res);
                            }
                            2 => {
                                let res =
                                    c.op("Consumer::peek_many+release", Duration::ZERO, || {
                                        q.peek_many(8).map(|b| {
                                            let s: u64 =
                                                b.iter().fold(0, |a, x| a.wrapping_add(*x));
                                            b.release();
                                            s
                                        })
                                    });
                                c.note("ring.peek_many", &res);
                            }
                            _ => {
                                let res =
                                    c.op("Consumer::try_recv", Duration::ZERO, || q.try_recv());
                                c.note("ring.try_recv", &res);
                            }
                        }
                    }
                    c.op("drop Consumer", Duration::ZERO, || drop(q));
                }
            },
        ));
    }

    // SPSC byte ring.
    {
        let r = ByteRing::open_with(&n(1), &o).unwrap();
        workers.push(spawn_worker(
            &shared,
            "bytes-prod".into(),
            seeds.next(),
            move |c| {
                let msg = [0xa5u8; BYTES_MAX];
                while c.running() {
                    let got = c.op("ByteRing::producer", Duration::ZERO, || r.producer());
                    c.note("bytes.producer", &got);
                    let Ok(mut p) = got else { continue };
                    for _ in 0..64 {
                        let len = c.rng.below(BYTES_MAX + 1);
                        if c.rng.next() & 1 == 0 {
                            let res = c.op("ByteProducer::send_timeout", t, || {
                                p.send_timeout(&msg[..len], t)
                            });
                            c.note("bytes.send", &res);
                        } else {
                            let res = c.op("ByteProducer::reserve_timeout+commit", t, || {
                                p.reserve_timeout(len, t).map(|mut s| {
                                    s.fill(7);
                                    s.commit()
                                })
                            });
                            c.note("bytes.reserve", &res);
                        }
                    }
                    c.op("drop ByteProducer", Duration::ZERO, || drop(p));
                }
            },
        ));
        let r = ByteRing::open_with(&n(1), &o).unwrap();
        workers.push(spawn_worker(
            &shared,
            "bytes-cons".into(),
            seeds.next(),
            move |c| {
                let mut buf = Vec::new();
                while c.running() {
                    let got = c.op("ByteRing::consumer", Duration::ZERO, || r.consumer());
                    c.note("bytes.consumer", &got);
                    let Ok(mut q) = got else { continue };
                    for _ in 0..64 {
                        if c.rng.next() & 1 == 0 {
                            let res = c.op("ByteConsumer::recv_timeout_into", t, || {
                                q.recv_timeout_into(&mut buf, t)
                            });
                            c.note("bytes.recv", &res);
                        } else {
                            let res = c.op("ByteConsumer::peek_timeout+release", t, || {
                                q.peek_timeout(t).map(|s| {
                                    let n = s.iter().map(|&b| b as usize).sum::<usize>();
                                    s.release();
                                    n
                                })
                            });
                            c.note("bytes.peek", &res);
                        }
                    }
                    c.op("drop ByteConsumer", Duration::ZERO, || drop(q));
                }
            },
        ));
    }

    // MPMC typed ring: two producers, two consumers.
    for k in 0..2 {
        let r = MpmcRing::<u64>::open_with(&n(2), &o).unwrap();
        workers.push(spawn_worker(
            &shared,
            format!("mpmc-prod{k}"),
            seeds.next(),
            move |c| {
                while c.running() {
                    let got = c.op("MpmcRing::producer", Duration::ZERO, || r.producer());
                    c.note("mpmc.producer", &got);
                    let Ok(mut p) = got else { continue };
                    for i in 0..64u64 {
                        match c.rng.below(3) {
                            0 => {
                                let res =
                                    c.op("MpmcProducer::send_timeout", t, || p.send_timeout(i, t));
                                c.note("mpmc.send", &res);
                            }
                            1 => {
                                let res =
                                    c.op("MpmcProducer::reserve+commit", Duration::ZERO, || {
                                        p.reserve().map(|mut s| {
                                            *s = i;
                                            s.commit()
                                        })
                                    });
                                c.note("mpmc.reserve", &res);
                            }
                            _ => {
                                let res = c
                                    .op("MpmcProducer::try_send", Duration::ZERO, || p.try_send(i));
                                c.note("mpmc.try_send", &res);
                            }
                        }
                    }
                    c.op("drop MpmcProducer", Duration::ZERO, || drop(p));
                }
            },
        ));
        let r = MpmcRing::<u64>::open_with(&n(2), &o).unwrap();
        workers.push(spawn_worker(
            &shared,
            format!("mpmc-cons{k}"),
            seeds.next(),
            move |c| {
                while c.running() {
                    let got = c.op("MpmcRing::consumer", Duration::ZERO, || r.consumer());
                    c.note("mpmc.consumer", &got);
                    let Ok(mut q) = got else { continue };
                    for _ in 0..64 {
                        match c.rng.below(3) {
                            0 => {
                                let res =
                                    c.op("MpmcConsumer::recv_timeout", t, || q.recv_timeout(t));
                                c.note("mpmc.recv", &res);
                            }
                            1 => {
                                let res = c.op("MpmcConsumer::peek_timeout+release", t, || {
                                    q.peek_timeout(t).map(|s| {
                                        let v = *s;
                                        s.release();
                                        v
                                    })
                                });
                                c.note("mpmc.peek", &res);
                            }
                            _ => {
                                let res =
                                    c.op("MpmcConsumer::try_recv", Duration::ZERO, || q.try_recv());
                                c.note("mpmc.try_recv", &res);
                            }
                        }
                    }
                    c.op("drop MpmcConsumer", Duration::ZERO, || drop(q));
                }
            },
        ));
    }

    // MPMC byte ring: one producer, one consumer.
    {
        let r = MpmcByteRing::open_with(&n(3), &o).unwrap();
        workers.push(spawn_worker(
            &shared,
            "mpmcb-prod".into(),
            seeds.next(),
            move |c| {
                let msg = [0x5au8; BYTES_MAX];
                while c.running() {
                    let got = c.op("MpmcByteRing::producer", Duration::ZERO, || r.producer());
                    c.note("mpmcb.producer", &got);
                    let Ok(mut p) = got else { continue };
                    for _ in 0..64 {
                        let len = c.rng.below(BYTES_MAX + 1);
                        let res = c.op("MpmcByteProducer::send_timeout", t, || {
                            p.send_timeout(&msg[..len], t)
                        });
                        c.note("mpmcb.send", &res);
                    }
                    c.op("drop MpmcByteProducer", Duration::ZERO, || drop(p));
                }
            },
        ));
        let r = MpmcByteRing::open_with(&n(3), &o).unwrap();
        workers.push(spawn_worker(
            &shared,
            "mpmcb-cons".into(),
            seeds.next(),
            move |c| {
                let mut buf = Vec::new();
                while c.running() {
                    let got = c.op("MpmcByteRing::consumer", Duration::ZERO, || r.consumer());
                    c.note("mpmcb.consumer", &got);
                    let Ok(mut q) = got else { continue };
                    for _ in 0..64 {
                        let res = c.op("MpmcByteConsumer::recv_timeout_into", t, || {
                            q.recv_timeout_into(&mut buf, t)
                        });
                        c.note("mpmcb.recv", &res);
                    }
                    c.op("drop MpmcByteConsumer", Duration::ZERO, || drop(q));
                }
            },
        ));
    }

    // Resource semaphore: two acquirers; signal semaphore: a poster and a waiter.
    for k in 0..2 {
        let s = Semaphore::open_with(&n(4), &o).unwrap();
        workers.push(spawn_worker(
            &shared,
            format!("sem{k}"),
            seeds.next(),
            move |c| {
                while c.running() {
                    if c.rng.next() & 1 == 0 {
                        let res = c.op("Semaphore::acquire_timeout+drop", t, || {
                            s.acquire_timeout(t).map(drop)
                        });
                        c.note("sem.acquire", &res);
                    } else {
                        let res = c.op("Semaphore::try_acquire+drop", Duration::ZERO, || {
                            s.try_acquire().map(drop)
                        });
                        c.note("sem.try_acquire", &res);
                    }
                }
            },
        ));
    }
    {
        let s = Semaphore::open_with(&n(5), &o).unwrap();
        workers.push(spawn_worker(
            &shared,
            "sig-post".into(),
            seeds.next(),
            move |c| {
                while c.running() {
                    let k = 1 + c.rng.below(3) as u32;
                    let res = c.op("Semaphore::post", Duration::ZERO, || s.post(k));
                    c.note("sig.post", &res);
                    let res = c.op("Semaphore::wait_timeout", t, || s.wait_timeout(t));
                    c.note("sig.wait", &res);
                }
            },
        ));
        let s = Semaphore::open_with(&n(5), &o).unwrap();
        workers.push(spawn_worker(
            &shared,
            "sig-wait".into(),
            seeds.next(),
            move |c| {
                while c.running() {
                    let res = c.op("Semaphore::wait_timeout", t, || s.wait_timeout(t));
                    c.note("sig.wait", &res);
                    let res = c.op("Semaphore::try_wait", Duration::ZERO, || s.try_wait());
                    c.note("sig.try_wait", &res);
                }
            },
        ));
    }

    // Mutex: two lockers.
    for k in 0..2 {
        let m = Mutex::<u64>::open_with(&n(6), &o).unwrap();
        workers.push(spawn_worker(
            &shared,
            format!("mutex{k}"),
            seeds.next(),
            move |c| {
                while c.running() {
                    if c.rng.next() & 1 == 0 {
                        let res = c.op("Mutex::lock_timeout+unlock", t, || {
                            m.lock_timeout(t).map(|mut g| *g = g.wrapping_add(1))
                        });
                        c.note("mutex.lock", &res);
                    } else {
                        let res = c.op("Mutex::try_lock+unlock", Duration::ZERO, || {
                            m.try_lock().map(|mut g| *g = g.wrapping_add(1))
                        });
                        c.note("mutex.try_lock", &res);
                    }
                }
            },
        ));
    }

    // Events: a setter and a waiter on each.
    for (i, tag) in [(7usize, "evauto"), (8, "evman")] {
        let e = Event::open_with(&n(i), &o).unwrap();
        workers.push(spawn_worker(
            &shared,
            format!("{tag}-set"),
            seeds.next(),
            move |c| {
                while c.running() {
                    match c.rng.below(3) {
                        0 | 1 => c.op("Event::set", Duration::ZERO, || e.set()),
                        _ => c.op("Event::reset", Duration::ZERO, || e.reset()),
                    }
                    let res = c.op("Event::wait_timeout", t, || e.wait_timeout(t));
                    c.note(tag, &res);
                }
            },
        ));
        let e = Event::open_with(&n(i), &o).unwrap();
        workers.push(spawn_worker(
            &shared,
            format!("{tag}-wait"),
            seeds.next(),
            move |c| {
                while c.running() {
                    let res = c.op("Event::wait_timeout", t, || e.wait_timeout(t));
                    c.note(tag, &res);
                    c.op("Event::try_wait", Duration::ZERO, || e.try_wait());
                }
            },
        ));
    }

    // Admin: inspect, sweep and fresh opens of every object (the opens re-validate the
    // header, so this is where most `Corrupted` errors come from).
    {
        let names = names.clone();
        workers.push(spawn_worker(
            &shared,
            "admin".into(),
            seeds.next(),
            move |c| {
                let o = opts();
                // Each open or sweep waits at most the open timeout for the admin lock.
                let b = OPEN_TIMEOUT;
                while c.running() {
                    let i = c.rng.below(names.len());
                    let name = &names[i];
                    let res = c.op("admin::inspect_with", b, || admin::inspect_with(name, &o));
                    c.note("admin.inspect", &res);
                    let res = c.op("open_with+sweep+drop", 3 * b, || match i {
                        0 => Ring::<u64>::open_with(name, &o).and_then(|h| h.sweep()),
                        1 => ByteRing::open_with(name, &o).and_then(|h| h.sweep()),
                        2 => MpmcRing::<u64>::open_with(name, &o).and_then(|h| h.sweep()),
                        3 => MpmcByteRing::open_with(name, &o).and_then(|h| h.sweep()),
                        4 | 5 => Semaphore::open_with(name, &o).and_then(|h| h.sweep()),
                        6 => Mutex::<u64>::open_with(name, &o).and_then(|h| h.sweep()),
                        _ => Event::open_with(name, &o).and_then(|h| h.sweep()),
                    });
                    c.note("admin.open", &res);
                }
            },
        ));
    }

    let dog = watchdog(shared.clone());
    let mut cmd = child_command(
        "child_corrupter",
        "child_corrupter",
        &names.join(","),
        &format!("{seed}:{secs}"),
    );
    let (child, lines) = spawn_with_lines(&mut cmd, Stdio::null(), Some(TAG), "corrupter");
    let mut corrupter = Reaper(child);
    let injected = first_line(&lines, Duration::from_secs(secs + 60), |l| {
        l.strip_prefix("injected ")
            .map(|n| n.trim().parse::<u64>().expect("count"))
    })
    .unwrap_or_else(|e| panic!("seed {seed}: corrupter printed no count: {e:?}"));
    let status = corrupter.0.wait().expect("reap the corrupter");
    assert!(status.success(), "corrupter: {status:?}");

    // Stop the honest side and wait for every worker within its deadline + margin.
    shared.stop.store(true, Ordering::Relaxed);
    // The watchdog flags a worker that overruns; the cap only guards against a
    // watchdog that itself cannot run.
    let give_up = Instant::now() + Duration::from_secs(120);
    while workers.iter().any(|(_, h)| !h.is_finished())
        && shared.hangs.lock().unwrap().is_empty()
        && Instant::now() < give_up
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let hangs = shared.hangs.lock().unwrap().clone();
    let stuck: Vec<&str> = workers
        .iter()
        .filter(|(_, h)| !h.is_finished())
        .map(|(l, _)| l.as_str())
        .collect();
    assert!(
        hangs.is_empty() && stuck.is_empty(),
        "seed {seed}: hangs {hangs:?}, workers still running {stuck:?}"
    );
    let mut panics = Vec::new();
    for (label, h) in workers {
        if let Err(e) = h.join() {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panics.push(format!("{label}: {msg}"));
        }
    }
    dog.join().expect("watchdog");
    assert!(panics.is_empty(), "seed {seed}: worker panics: {panics:?}");

    // The creator's handles go last, on whatever the corrupter left.
    drop((
        ring, bytes, mpmc, mpmcb, sem, sig, mutex, ev_auto, ev_manual,
    ));
    drop(cleanup);
    let ops = shared.ops.load(Ordering::Relaxed);
    let outcomes = shared.outcomes.lock().unwrap().clone();
    let errors: u64 = outcomes.values().sum();
    let corrupted: u64 = outcomes
        .iter()
        .filter(|(k, _)| k.ends_with(":Corrupted"))
        .map(|(_, v)| v)
        .sum();
    let figures = format!(
        "hostile run: seed {seed}, {secs} s: {injected} corruptions injected, {ops} honest operations, {errors} errors ({corrupted} Corrupted), 0 panics, 0 crashes, 0 hangs"
    );
    eprintln!("{figures}");
    eprintln!(
        "worst overrun of a finished operation past its deadline: {:?} (wall time)",
        Duration::from_nanos(shared.worst.load(Ordering::Relaxed))
    );
    eprintln!(
        "the process was off the CPU for {:?} in all (not charged to operations)",
        Duration::from_nanos(shared.stalled.load(Ordering::Relaxed))
    );
    eprintln!("errors by type: {outcomes:#?}");
    assert!(injected > 0 && ops > 0, "{figures}");
    figures
}

/// The ordinary suite's short run (`TALLY_HOSTILE_SECS` makes it longer).
#[test]
fn honest_handles_survive_a_live_corrupting_peer() {
    if std::env::var(common::ROLE_ENV).is_ok() {
        return;
    }
    hostile_run(secs(), seed());
}

// --- regressions found by the corrupting peer ------------------------------------------

/// Offset of the MPMC ring's orphan count in its object area (`MpmcHeader.ctl.orphans`:
/// three 128-byte padded lines after the first, then the fourth u32 of `Control`).
const MPMC_ORPHANS: u64 = 4 * 128 + 12;

/// Runs `f` on a thread of its own and fails if it does not return within `bound`.
fn within<R: Send + 'static>(
    bound: Duration,
    what: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(bound)
        .unwrap_or_else(|e| panic!("{what} did not return within {bound:?} ({e:?})"))
}

/// Found by the corrupting peer (seed 1796633273625241585): a hostile orphan count
/// made an MPMC consumer's `recv_timeout` spin for ever. `read_ready` said yes (orphans
/// waiting) while the claim found none, so the wait returned at once, the claim failed
/// again, and nothing between the two checked the deadline. Every wait now checks its
/// deadline on entry, so such a loop ends at the deadline.
#[test]
fn a_forged_orphan_count_does_not_turn_recv_timeout_into_a_spin_for_ever() {
    let name = unique(PREFIX, "orphans");
    let _cleanup = Cleanup(vec![name.clone()]);
    let ring = MpmcRing::<u64>::create_with(&name, 8, &opts()).unwrap();
    let object = {
        let f = std::fs::File::open(shm_path(&name)).unwrap();
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, 32).unwrap();
        u64::from_ne_bytes(b)
    };
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    let mut was = [0u8; 4];
    f.read_exact_at(&mut was, object + MPMC_ORPHANS).unwrap();
    assert_eq!(
        u32::from_ne_bytes(was),
        0,
        "the orphan count moved: fix MPMC_ORPHANS"
    );
    f.write_all_at(&1u32.to_ne_bytes(), object + MPMC_ORPHANS)
        .unwrap();
    let mut c = ring.consumer().unwrap();
    let _p = ring.producer().unwrap();
    let took = within(Duration::from_secs(10), "recv_timeout(50 ms)", move || {
        let start = Instant::now();
        let res = c.recv_timeout(Duration::from_millis(50));
        (format!("{res:?}"), start.elapsed())
    });
    assert_eq!(took.0, "Err(Timeout)");
    assert!(took.1 < Duration::from_secs(2), "took {:?}", took.1);
}
