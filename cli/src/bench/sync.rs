//! `tally bench sync`: hand-off latency between two processes and uncontended cost per
//! operation of tally's mutex, semaphore and event, against POSIX named semaphores, a
//! process-shared robust pthread mutex, a raw futex wake and the cache-line floor.
//!
//! Hand-off: the other process (forked, pinned to the second CPU) waits in the
//! operation; this one takes a CLOCK_MONOTONIC timestamp, stores it in shared memory
//! and releases (unlock / post / set / futex wake / store); the waiter takes its own
//! timestamp when its wait returns. The difference is one hand-off, measured the same
//! way for every contender. A sleeping round starts only once the waiter's state in
//! /proc is `S` (asleep); a spinning round gives the waiter 30 µs to enter its spin.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tally::{Event, Mutex, Reset, Semaphore};

use super::{BenchArgs, BenchError, bench_name, new_histogram};

/// Results, in nanoseconds.
#[derive(Debug, Default)]
pub struct Report {
    mutex_uncontended: f64,
    mutex_sleep: u64,
    mutex_spin: u64,
    sem_uncontended: f64,
    sem_sleep: u64,
    sem_spin: u64,
    event_sleep: u64,
    pthread_uncontended: f64,
    posix_uncontended: f64,
    posix_sleep: u64,
    futex_wake: u64,
    two_line: u64,
    rounds: u64,
}

/// Control words shared with the forked waiter, each on its own cache line.
#[repr(C, align(128))]
struct Line<T>(T);

#[repr(C)]
struct Ctl {
    go: Line<AtomicU64>,
    armed: Line<AtomicU64>,
    t0: Line<AtomicU64>,
    done: Line<AtomicU64>,
    lat: Line<AtomicU64>,
    futex: Line<AtomicU32>,
    floor: Line<AtomicU64>,
    pthread: Line<libc::pthread_mutex_t>,
}

/// A shared anonymous mapping inherited by the forked waiter.
struct SharedMap {
    ptr: *mut Ctl,
}

impl SharedMap {
    fn new() -> Result<Self, BenchError> {
        // SAFETY: an anonymous shared mapping of a fresh, zeroed region; no pointer
        // arguments besides the null hint.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                std::mem::size_of::<Ctl>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(SharedMap { ptr: p as *mut Ctl })
    }

    fn ctl(&self) -> &Ctl {
        // SAFETY: a live, zeroed mapping of size_of::<Ctl>() bytes, page-aligned; all
        // zeroes is a valid Ctl (atomics, and a pthread mutex initialised before use).
        unsafe { &*self.ptr }
    }
}

impl Drop for SharedMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped, once.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, std::mem::size_of::<Ctl>()) };
    }
}

fn now_ns() -> u64 {
    tally::__private::monotonic_ns()
}

/// Whether process `pid` is asleep (its /proc state is `S`).
fn asleep(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|st| st == "S")
        })
        .unwrap_or(false)
}

fn spin_for(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

fn wait_for(word: &AtomicU64, v: u64) -> Result<(), BenchError> {
    let start = Instant::now();
    while word.load(Ordering::Acquire) != v {
        std::hint::spin_loop();
        if start.elapsed() > Duration::from_secs(10) {
            return Err("the waiting process stopped answering".into());
        }
    }
    Ok(())
}

/// One contender: what the waiter does, and what the releaser does.
trait Handoff {
    /// In the waiter (child), after fork: open its own handles.
    fn child_setup(&mut self) -> Result<(), BenchError>;
    /// In the waiter: wait (returns when released).
    fn child_wait(&mut self);
    /// In the waiter: undo after the timestamp (e.g. unlock).
    fn child_after(&mut self) {}
    /// In the releaser, before arming a round (e.g. take the lock).
    fn prepare(&mut self) {}
    /// In the releaser: release the waiter.
    fn release(&mut self);
}

/// Forks a waiter pinned to `cpus.1` and measures `rounds` hand-offs; returns the p50.
fn handoff(
    map: &SharedMap,
    h: &mut dyn Handoff,
    rounds: u64,
    sleep: bool,
    cpus: (usize, usize),
) -> Result<u64, BenchError> {
    let ctl = map.ctl();
    for w in [&ctl.go.0, &ctl.armed.0, &ctl.done.0, &ctl.t0.0, &ctl.lat.0] {
        w.store(0, Ordering::Relaxed);
    }
    ctl.futex.0.store(0, Ordering::Relaxed);
    ctl.floor.0.store(0, Ordering::Relaxed);
    // SAFETY: this process is single-threaded here (the bench starts no threads), so
    // the child may run ordinary code; it ends with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    if pid == 0 {
        let code = match child(ctl, h, rounds, cpus.1) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("tally bench sync: waiter: {e}");
                1
            }
        };
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    let mut hist = new_histogram();
    let result = (|| -> Result<(), BenchError> {
        for r in 1..=rounds {
            h.prepare();
            ctl.go.0.store(r, Ordering::Release);
            wait_for(&ctl.armed.0, r)?;
            if sleep {
                let start = Instant::now();
                while !asleep(pid) {
                    std::hint::spin_loop();
                    if start.elapsed() > Duration::from_secs(10) {
                        return Err("the waiter never fell asleep".into());
                    }
                }
            } else {
                spin_for(Duration::from_micros(30));
            }
            ctl.t0.0.store(now_ns(), Ordering::Release);
            h.release();
            wait_for(&ctl.done.0, r)?;
            let _ = hist.record(ctl.lat.0.load(Ordering::Acquire).max(1));
        }
        Ok(())
    })();
    let mut status = 0;
    // SAFETY: reaps our own child; `status` is a valid out-pointer.
    unsafe {
        if result.is_err() {
            libc::kill(pid, libc::SIGKILL);
        }
        libc::waitpid(pid, &mut status, 0);
    }
    result?;
    if status != 0 {
        return Err(format!("the waiting process failed (status {status})").into());
    }
    Ok(hist.value_at_quantile(0.5))
}

fn child(ctl: &Ctl, h: &mut dyn Handoff, rounds: u64, cpu: usize) -> Result<(), BenchError> {
    tally::__private::pin_to_cpu(cpu)?;
    h.child_setup()?;
    for r in 1..=rounds {
        wait_for(&ctl.go.0, r)?;
        ctl.armed.0.store(r, Ordering::Release);
        h.child_wait();
        let t1 = now_ns();
        let t0 = ctl.t0.0.load(Ordering::Acquire);
        ctl.lat.0.store(t1.saturating_sub(t0), Ordering::Relaxed);
        h.child_after();
        ctl.done.0.store(r, Ordering::Release);
    }
    Ok(())
}

struct MutexHandoff<'a> {
    name: String,
    parent: &'a Mutex<u64>,
    held: Option<tally::MutexGuard<'a, u64>>,
    child: Option<Mutex<u64>>,
    spin: Duration,
}

impl Handoff for MutexHandoff<'_> {
    fn child_setup(&mut self) -> Result<(), BenchError> {
        let mut m = Mutex::<u64>::open(&self.name)?;
        m.set_spin(self.spin);
        self.child = Some(m);
        Ok(())
    }
    fn child_wait(&mut self) {
        let m = self.child.as_ref().expect("set up");
        let g = m.lock().unwrap_or_else(|e| panic!("lock: {e}"));
        drop(g); // one uncontended swap before the timestamp: the guard borrows `m`
    }
    fn prepare(&mut self) {
        self.held = Some(self.parent.lock().unwrap_or_else(|e| panic!("lock: {e}")));
    }
    fn release(&mut self) {
        self.held = None;
    }
}

struct SemHandoff<'a> {
    name: String,
    parent: &'a Semaphore,
    child: Option<Semaphore>,
    spin: Duration,
}

impl Handoff for SemHandoff<'_> {
    fn child_setup(&mut self) -> Result<(), BenchError> {
        let mut s = Semaphore::open(&self.name)?;
        s.set_spin(self.spin);
        self.child = Some(s);
        Ok(())
    }
    fn child_wait(&mut self) {
        let s = self.child.as_ref().expect("set up");
        s.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    }
    fn release(&mut self) {
        self.parent.post(1).unwrap_or_else(|e| panic!("post: {e}"));
    }
}

struct EventHandoff<'a> {
    name: String,
    parent: &'a Event,
    child: Option<Event>,
}

impl Handoff for EventHandoff<'_> {
    fn child_setup(&mut self) -> Result<(), BenchError> {
        let mut e = Event::open(&self.name)?;
        e.set_spin(Duration::ZERO);
        self.child = Some(e);
        Ok(())
    }
    fn child_wait(&mut self) {
        let e = self.child.as_ref().expect("set up");
        e.wait().unwrap_or_else(|e| panic!("wait: {e}"));
    }
    fn release(&mut self) {
        self.parent.set();
    }
}

struct PosixSem(*mut libc::sem_t);

impl Handoff for PosixSem {
    fn child_setup(&mut self) -> Result<(), BenchError> {
        Ok(()) // the sem_open mapping is inherited through fork
    }
    fn child_wait(&mut self) {
        // SAFETY: a semaphore from sem_open, mapped in this (forked) process.
        while unsafe { libc::sem_wait(self.0) } != 0 {}
    }
    fn release(&mut self) {
        // SAFETY: as above.
        unsafe { libc::sem_post(self.0) };
    }
}

struct Futex<'a> {
    word: &'a AtomicU32,
    round: u32,
}

impl Handoff for Futex<'_> {
    fn child_setup(&mut self) -> Result<(), BenchError> {
        Ok(())
    }
    fn child_wait(&mut self) {
        self.round += 1;
        loop {
            let v = self.word.load(Ordering::Acquire);
            if v == self.round {
                return;
            }
            tally::__private::futex_wait(self.word, v, None);
        }
    }
    fn release(&mut self) {
        self.round += 1;
        self.word.store(self.round, Ordering::Release);
        tally::__private::futex_wake(self.word, 1);
    }
}

struct Floor<'a> {
    word: &'a AtomicU64,
    round: u64,
}

impl Handoff for Floor<'_> {
    fn child_setup(&mut self) -> Result<(), BenchError> {
        Ok(())
    }
    fn child_wait(&mut self) {
        self.round += 1;
        while self.word.load(Ordering::Acquire) != self.round {
            std::hint::spin_loop();
        }
    }
    fn release(&mut self) {
        self.round += 1;
        self.word.store(self.round, Ordering::Release);
    }
}

/// Nanoseconds per iteration of `f`, the best of three runs of `n`.
fn per_op(n: u64, mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                f();
            }
            start.elapsed().as_nanos() as f64 / n as f64
        })
        .fold(f64::INFINITY, f64::min)
}

pub fn run(args: &BenchArgs, cpus: (usize, usize)) -> Result<Report, BenchError> {
    tally::__private::pin_to_cpu(cpus.0)?;
    let rounds = (args.iters / 100).clamp(100, 5000);
    let n = 2_000_000;
    let map = SharedMap::new()?;
    let mut rep = Report {
        rounds,
        ..Report::default()
    };

    // tally mutex
    let mname = bench_name("mtx");
    let m = Mutex::<u64>::create(&mname, 0)?;
    rep.mutex_uncontended = per_op(n, || {
        if let Ok(g) = m.lock() {
            drop(g);
        }
    });
    for (spin, out) in [
        (Duration::ZERO, &mut rep.mutex_sleep),
        (Duration::MAX, &mut rep.mutex_spin),
    ] {
        let mut h = MutexHandoff {
            name: mname.clone(),
            parent: &m,
            held: None,
            child: None,
            spin,
        };
        *out = handoff(&map, &mut h, rounds, spin.is_zero(), cpus)?;
    }
    drop(m);

    // tally semaphore (signal flavour)
    let sname = bench_name("sem");
    let s = Semaphore::create(&sname, 1, 1)?;
    rep.sem_uncontended = per_op(n, || {
        let _ = std::hint::black_box(s.wait());
        let _ = s.post(1);
    });
    s.wait()?; // count 0: every round's waiter blocks
    for (spin, out) in [
        (Duration::ZERO, &mut rep.sem_sleep),
        (Duration::MAX, &mut rep.sem_spin),
    ] {
        let mut h = SemHandoff {
            name: sname.clone(),
            parent: &s,
            child: None,
            spin,
        };
        *out = handoff(&map, &mut h, rounds, spin.is_zero(), cpus)?;
    }
    drop(s);

    // tally event (auto reset)
    let ename = bench_name("evt");
    let e = Event::create(&ename, Reset::Auto)?;
    let mut h = EventHandoff {
        name: ename.clone(),
        parent: &e,
        child: None,
    };
    rep.event_sleep = handoff(&map, &mut h, rounds, true, cpus)?;
    drop(e);

    // robust, process-shared pthread mutex in shared memory
    let pm = &map.ctl().pthread.0 as *const _ as *mut libc::pthread_mutex_t;
    // SAFETY: initialising a mutex in our shared mapping with a fresh attribute object;
    // every pointer is to live, writable memory.
    unsafe {
        let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
        libc::pthread_mutexattr_init(&mut attr);
        libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
        libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
        libc::pthread_mutex_init(pm, &attr);
        libc::pthread_mutexattr_destroy(&mut attr);
    }
    rep.pthread_uncontended = per_op(n, || {
        // SAFETY: an initialised robust mutex in live shared memory.
        unsafe {
            libc::pthread_mutex_lock(pm);
            libc::pthread_mutex_unlock(pm);
        }
    });
    // SAFETY: unlocked and no longer used.
    unsafe { libc::pthread_mutex_destroy(pm) };

    // POSIX named semaphore
    let pname = std::ffi::CString::new(format!("/{}", bench_name("posix")))?;
    // SAFETY: a valid NUL-terminated name; O_CREAT|O_EXCL with mode and initial value.
    let ps = unsafe { libc::sem_open(pname.as_ptr(), libc::O_CREAT | libc::O_EXCL, 0o600, 1) };
    if ps == libc::SEM_FAILED {
        return Err(std::io::Error::last_os_error().into());
    }
    // SAFETY: a live semaphore from sem_open.
    rep.posix_uncontended = per_op(n, || unsafe {
        libc::sem_wait(ps);
        libc::sem_post(ps);
    });
    // SAFETY: as above; count 1 → 0 so every round's waiter blocks.
    unsafe { libc::sem_wait(ps) };
    let r = handoff(&map, &mut PosixSem(ps), rounds, true, cpus);
    // SAFETY: closes and unlinks what we opened.
    unsafe {
        libc::sem_close(ps);
        libc::sem_unlink(pname.as_ptr());
    }
    rep.posix_sleep = r?;

    // raw futex wake, and the cache-line floor
    let ctl = map.ctl();
    rep.futex_wake = handoff(
        &map,
        &mut Futex {
            word: &ctl.futex.0,
            round: 0,
        },
        rounds,
        true,
        cpus,
    )?;
    rep.two_line = handoff(
        &map,
        &mut Floor {
            word: &ctl.floor.0,
            round: 0,
        },
        rounds,
        false,
        cpus,
    )?;
    Ok(rep)
}

fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub fn to_json(r: &Report) -> Value {
    json!({
        "mutex": {
            "uncontended_ns": r1(r.mutex_uncontended),
            "handoff_sleep_p50_ns": r.mutex_sleep,
            "handoff_spin_p50_ns": r.mutex_spin,
        },
        "semaphore": {
            "uncontended_ns": r1(r.sem_uncontended),
            "handoff_sleep_p50_ns": r.sem_sleep,
            "handoff_spin_p50_ns": r.sem_spin,
        },
        "event": { "handoff_sleep_p50_ns": r.event_sleep },
        "baselines": {
            "pthread_robust_mutex": { "uncontended_ns": r1(r.pthread_uncontended) },
            "posix_semaphore": {
                "uncontended_ns": r1(r.posix_uncontended),
                "handoff_sleep_p50_ns": r.posix_sleep,
            },
            "futex": { "wake_p50_ns": r.futex_wake },
            "two_line": { "p50_ns": r.two_line },
        },
    })
}

pub fn print(r: &Report) {
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    println!(
        "sync objects, {} hand-offs per measurement (p50, ns); uncontended: ns per op pair",
        r.rounds
    );
    println!(
        "{:<34} {:>10} {:>12} {:>12}",
        "", "uncontended", "sleep", "spin"
    );
    println!(
        "{:<34} {:>10.1} {:>12} {:>12}",
        "tally mutex (lock+unlock)", r.mutex_uncontended, r.mutex_sleep, r.mutex_spin
    );
    println!(
        "{:<34} {:>10.1} {:>12} {:>12}",
        "tally semaphore (wait+post)", r.sem_uncontended, r.sem_sleep, r.sem_spin
    );
    println!(
        "{:<34} {:>10} {:>12} {:>12}",
        "tally event (set)", "-", r.event_sleep, "-"
    );
    println!(
        "{:<34} {:>10.1} {:>12} {:>12}",
        "pthread robust mutex", r.pthread_uncontended, "-", "-"
    );
    println!(
        "{:<34} {:>10.1} {:>12} {:>12}",
        "POSIX named semaphore", r.posix_uncontended, r.posix_sleep, "-"
    );
    println!(
        "{:<34} {:>10} {:>12} {:>12}",
        "raw futex wake", "-", r.futex_wake, "-"
    );
    println!(
        "{:<34} {:>10} {:>12} {:>12}",
        "cache-line floor", "-", "-", r.two_line
    );
    println!();
    println!(
        "mutex uncontended / pthread robust: {:.2} (target <= 1.2)",
        ratio(r.mutex_uncontended, r.pthread_uncontended)
    );
    for (what, v) in [
        ("mutex", r.mutex_sleep),
        ("semaphore", r.sem_sleep),
        ("event", r.event_sleep),
    ] {
        println!(
            "{what} sleeping hand-off / futex wake: {:.2} (target <= 1.1)",
            ratio(v as f64, r.futex_wake as f64)
        );
    }
    for (what, v) in [("mutex", r.mutex_spin), ("semaphore", r.sem_spin)] {
        println!(
            "{what} spinning hand-off / floor: {:.2} (target <= 1.3)",
            ratio(v as f64, r.two_line as f64)
        );
    }
}
