//! The runner: creates the run's objects, starts the workers, kills and replaces them,
//! watches progress, stops everything, checks, and cleans up.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tally::{ByteBroadcast, ByteRing, MpmcByteRing, Mutex, Options, Region, Semaphore};

use crate::broadcast::{BroadcastVerdict, PublisherEnd, SubscriberEnd};
use crate::check::{self, ConsumerLog, ProducerEnd, Verdict};
use crate::names::Names;
use crate::progress::Progress;
use crate::report::Report;
use crate::rng::Rng;
use crate::stats::{self, slot};
use crate::wire;
use crate::worker::sync::{AMBIGUOUS, COUNT, Counter, PENDING};
use crate::worker::{Plant, Role};

/// What a run does (the command line, checked).
#[derive(Clone, Debug)]
pub struct Config {
    /// How long workers run before the runner stops them.
    pub seconds: u64,
    /// MPMC producers.
    pub producers: u32,
    /// MPMC consumers.
    pub consumers: u32,
    /// SPSC pairs.
    pub spsc: u32,
    /// Subscriber seats on the broadcast ring (0: no broadcast ring).
    pub subscribers: u32,
    /// Largest payload in bytes.
    pub payload: usize,
    /// Kill a worker every `lo..=hi` ms, if set.
    pub kill_interval: Option<(u64, u64)>,
    /// The seed of every random choice.
    pub seed: u64,
    /// Workers on the resource semaphore, and its permits.
    pub permit_workers: u32,
    /// Permits of the resource semaphore.
    pub permits: u32,
    /// Workers on the mutex.
    pub mutex_workers: u32,
    /// Lifecycle workers.
    pub lifecycle: u32,
    /// The recovery bound: a longer stall of any family fails the run.
    pub stall: Duration,
    /// Slots of each ring.
    pub capacity: usize,
    /// A fault to plant.
    pub plant: Option<Plant>,
    /// Keep the run directory (logs) afterwards.
    pub keep_logs: bool,
    /// Whether the report is JSON (progress still goes to stderr).
    pub json: bool,
}

/// Set by SIGINT/SIGTERM to the runner: end the run early (still checking and
/// cleaning up).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_sig: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

fn install_interrupt() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe); the struct is
    // zeroed then filled as sigaction(2) expects.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_interrupt as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

/// How a worker process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Fate {
    Running,
    /// SIGKILLed by the runner.
    Killed,
    /// Died of SIGKILL the runner did not send: the worker's own hook, inside a library
    /// step.
    HookKilled,
    /// Stopped cleanly when told to.
    Stopped,
    /// Exited in any other way: a failure.
    Failed(String),
}

/// Which progress the watchdog watches a worker under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Family {
    Mpmc,
    Spsc(u32),
    Broadcast,
    Permits,
    Mutex,
    Lifecycle,
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Family::Mpmc => f.write_str("MPMC ring"),
            Family::Spsc(p) => write!(f, "SPSC ring {p}"),
            Family::Broadcast => f.write_str("broadcast ring"),
            Family::Permits => f.write_str("resource semaphore"),
            Family::Mutex => f.write_str("mutex"),
            Family::Lifecycle => f.write_str("lifecycle"),
        }
    }
}

struct Worker {
    id: u32,
    role: Role,
    pair: u32,
    pid: u32,
    child: Option<Child>,
    fate: Fate,
    /// Counters, read last when it ended.
    stats: [u64; slot::COUNT],
}

impl Worker {
    fn family(&self) -> Family {
        match self.role {
            Role::MpmcProducer | Role::MpmcConsumer => Family::Mpmc,
            Role::SpscProducer | Role::SpscConsumer => Family::Spsc(self.pair),
            Role::Publisher | Role::Subscriber => Family::Broadcast,
            Role::Permits => Family::Permits,
            Role::Mutex => Family::Mutex,
            Role::Lifecycle => Family::Lifecycle,
        }
    }

    /// Whether its progress counter is what the family's progress is measured by.
    fn counts_progress(&self) -> bool {
        !matches!(
            self.role,
            Role::MpmcProducer | Role::SpscProducer | Role::Publisher
        )
    }
}

/// The objects the runner holds for the whole run, so that killing every worker at
/// once never destroys a ring with messages in it.
struct Held {
    mpmc: MpmcByteRing,
    spsc: Vec<ByteRing>,
    bcast: Option<ByteBroadcast>,
    sem: Semaphore,
    mutex: Mutex<Counter>,
    /// A segment kept past the end on purpose (`--plant leak`).
    planted: Option<Region>,
}

struct Runner {
    cfg: Config,
    names: Names,
    dir: PathBuf,
    exe: PathBuf,
    rng: Rng,
    workers: Vec<Worker>,
    /// Each seat holds one live worker; the index of its current worker.
    seats: Vec<usize>,
    next_id: u32,
    kills: u64,
    hook_kills: u64,
    restarts: u64,
    failures: Vec<String>,
    planted_first: bool,
}

fn io_err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

impl Runner {
    fn spawn(&mut self, role: Role, pair: u32, plant: Option<Plant>) -> Result<usize, String> {
        let id = self.next_id;
        self.next_id += 1;
        let err = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("w{id}.err")))
            .map_err(|e| io_err("worker error file", e))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("worker")
            .args(["--role", role.label()])
            .args(["--id", &id.to_string()])
            .args(["--prefix", &self.names.prefix])
            .arg("--dir")
            .arg(&self.dir)
            .args(["--seed", &self.cfg.seed.to_string()])
            .args(["--payload", &self.cfg.payload.to_string()])
            .args(["--pair", &pair.to_string()])
            .args(["--subscribers", &self.cfg.subscribers.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        if self.cfg.kill_interval.is_some() {
            cmd.arg("--chaos");
        }
        if let Some(p) = plant {
            cmd.arg("--plant").arg(plant_arg(p));
        }
        let child = cmd
            .spawn()
            .map_err(|e| io_err("cannot start a worker", e))?;
        self.workers.push(Worker {
            id,
            role,
            pair,
            pid: child.id(),
            child: Some(child),
            fate: Fate::Running,
            stats: [0; slot::COUNT],
        });
        Ok(self.workers.len() - 1)
    }

    fn stats_path(&self, id: u32) -> PathBuf {
        self.dir.join(format!("w{id}.stats"))
    }

    /// Records how worker `w` ended, from its exit status.
    fn ended(&mut self, w: usize, status: std::process::ExitStatus, killed_by_us: bool) {
        let stats = stats::read(&self.stats_path(self.workers[w].id));
        let worker = &mut self.workers[w];
        worker.stats = stats;
        worker.child = None;
        worker.fate = if killed_by_us {
            Fate::Killed
        } else if status.signal() == Some(libc::SIGKILL) {
            Fate::HookKilled
        } else if status.code() == Some(0) && stats[slot::CLEAN_EXIT] == 1 {
            Fate::Stopped
        } else {
            Fate::Failed(format!("{status}"))
        };
        if let Fate::Failed(how) = &worker.fate {
            let tail = err_tail(&self.dir, worker.id);
            let msg = format!(
                "worker {} ({}, pid {}) ended: {how}{tail}",
                worker.id,
                worker.role.label(),
                worker.pid
            );
            self.failures.push(msg);
        }
        if worker.fate == Fate::HookKilled {
            self.hook_kills += 1;
            self.kills += 1;
        }
    }

    /// Reaps workers that died on their own and starts their replacements.
    fn reap_and_replace(&mut self) -> Result<(), String> {
        for seat in 0..self.seats.len() {
            let w = self.seats[seat];
            let status = match self.workers[w].child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => status,
                _ => continue,
            };
            self.ended(w, status, false);
            self.replace(seat)?;
        }
        Ok(())
    }

    fn replace(&mut self, seat: usize) -> Result<(), String> {
        let (role, pair) = (
            self.workers[self.seats[seat]].role,
            self.workers[self.seats[seat]].pair,
        );
        self.seats[seat] = self.spawn(role, pair, None)?;
        self.restarts += 1;
        Ok(())
    }

    /// SIGKILLs the worker in a random seat and starts its replacement.
    fn kill_one(&mut self) -> Result<(), String> {
        let seat = self.rng.range(0, self.seats.len() as u64 - 1) as usize;
        let w = self.seats[seat];
        let Some(mut child) = self.workers[w].child.take() else {
            return Ok(());
        };
        let _ = child.kill();
        let status = child.wait().map_err(|e| io_err("wait", e))?;
        self.kills += 1;
        // It may have died on its own just before: then it was not our kill.
        let ours = status.signal() == Some(libc::SIGKILL);
        if !ours {
            self.kills -= 1;
        }
        self.ended(w, status, ours);
        self.replace(seat)
    }

    /// Sums each family's progress counters (live workers read now, ended ones as they
    /// ended), and the failures counted so far.
    fn progress(&mut self) -> (HashMap<Family, u64>, u64, u64) {
        let mut fam: HashMap<Family, u64> = HashMap::new();
        let (mut delivered, mut failures) = (0, self.failures.len() as u64);
        for i in 0..self.workers.len() {
            if self.workers[i].child.is_some() {
                self.workers[i].stats = stats::read(&self.stats_path(self.workers[i].id));
            }
            let w = &self.workers[i];
            if w.counts_progress() {
                *fam.entry(w.family()).or_default() += w.stats[slot::PROGRESS];
            }
            if w.role.is_consumer() {
                delivered += w.stats[slot::PROGRESS];
            }
            failures += w.stats[slot::FAILURES];
        }
        (fam, delivered, failures)
    }

    /// What `tally inspect` shows of every object of the run, and every worker.
    fn dump_state(&self) -> String {
        let mut out = String::from("state of every object of the run:\n");
        match tally::admin::list() {
            Ok(names) => {
                for n in names.iter().filter(|n| self.names.owns(n)) {
                    match tally::admin::inspect(n) {
                        Ok(info) => out.push_str(&format!("{info:#?}\n")),
                        Err(e) => out.push_str(&format!("{n}: {e}\n")),
                    }
                }
            }
            Err(e) => out.push_str(&format!("cannot list objects: {e}\n")),
        }
        out.push_str("workers:\n");
        for w in self.workers.iter().filter(|w| w.child.is_some()) {
            out.push_str(&format!(
                "  worker {} {} pid {}: progress {} failures {}\n",
                w.id,
                w.role.label(),
                w.pid,
                w.stats[slot::PROGRESS],
                w.stats[slot::FAILURES]
            ));
        }
        out
    }

    /// Tells the live workers of `which` roles to stop, and waits for them.
    fn stop(&mut self, which: impl Fn(Role) -> bool, grace: Duration) {
        let live: Vec<usize> = (0..self.workers.len())
            .filter(|&w| self.workers[w].child.is_some() && which(self.workers[w].role))
            .collect();
        let deadline = Instant::now() + grace;
        for &w in &live {
            // A worker installs its SIGTERM handler before it creates its stats file:
            // one that has not got that far yet would die of the signal instead of
            // stopping cleanly (a consumer then leaves its ring undrained).
            while !self.stats_path(self.workers[w].id).exists()
                && Instant::now() < deadline
                && self.workers[w]
                    .child
                    .as_mut()
                    .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
            {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        for &w in &live {
            // SAFETY: kill(2) of our own child, which we have not reaped yet (its pid
            // cannot have been reused).
            unsafe {
                libc::kill(self.workers[w].pid as libc::pid_t, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        for w in live {
            while let Some(child) = self.workers[w].child.as_mut() {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        self.workers[w].child = None;
                        let killed = status.signal() == Some(libc::SIGTERM);
                        self.ended(w, status, killed);
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    _ => {
                        let dump = self.dump_state();
                        let mut child = self.workers[w].child.take().expect("live");
                        let _ = child.kill();
                        let _ = child.wait();
                        let worker = &mut self.workers[w];
                        worker.stats = stats::read(&self.dir.join(format!("w{}.stats", worker.id)));
                        worker.fate = Fate::Failed("did not stop".into());
                        let msg = format!(
                            "worker {} ({}, pid {}) did not stop within {grace:?} of SIGTERM (killed)\n{dump}",
                            worker.id,
                            worker.role.label(),
                            worker.pid
                        );
                        self.failures.push(msg);
                        break;
                    }
                }
            }
        }
    }

    /// Kills every live worker (after a failure that ends the run).
    fn kill_all(&mut self) {
        for w in 0..self.workers.len() {
            if let Some(mut child) = self.workers[w].child.take() {
                let _ = child.kill();
                if let Ok(status) = child.wait() {
                    self.ended(w, status, true);
                }
            }
        }
    }

    /// Runs the checker over one queue's producers and consumers.
    fn check_queue(
        &self,
        producer: Role,
        consumer: Role,
        pair: Option<u32>,
        ring_redelivered: Option<u64>,
    ) -> Verdict {
        let mine = |w: &&Worker| pair.is_none_or(|p| w.pair == p);
        let producers: HashMap<u32, ProducerEnd> = self
            .workers
            .iter()
            .filter(|w| w.role == producer)
            .filter(mine)
            .map(|w| {
                (
                    w.id,
                    ProducerEnd {
                        committed: w.stats[slot::PROGRESS],
                        clean: w.fate == Fate::Stopped,
                    },
                )
            })
            .collect();
        let logs = self
            .workers
            .iter()
            .filter(|w| w.role == consumer)
            .filter(mine)
            .map(|w| {
                let path = self.dir.join(format!("w{}.log", w.id));
                let records = wire::read_log(&path).map(|(r, _)| r).unwrap_or_default();
                ConsumerLog {
                    records,
                    killed: w.fate != Fate::Stopped,
                }
            });
        check::check_queue(&producers, logs, ring_redelivered)
    }
}

impl Runner {
    /// Runs the broadcast check over every publisher and every subscriber seat.
    fn check_broadcast(&self, ring: &ByteBroadcast, seats: u32) -> BroadcastVerdict {
        let tail = ring.info().broadcast.map_or(0, |b| b.tail);
        let publishers: Vec<PublisherEnd> = self
            .workers
            .iter()
            .filter(|w| w.role == Role::Publisher)
            .map(|w| PublisherEnd {
                id: w.id,
                joined: w.stats[slot::JOINED] == 1,
                base: w.stats[slot::BASE],
                committed: w.stats[slot::PROGRESS],
                clean: w.fate == Fate::Stopped,
            })
            .collect();
        let seats: Vec<Vec<SubscriberEnd>> = (0..seats)
            .map(|seat| {
                self.workers
                    .iter()
                    .filter(|w| w.role == Role::Subscriber && w.pair == seat)
                    .map(|w| {
                        let path = self.dir.join(format!("w{}.log", w.id));
                        SubscriberEnd {
                            joined: w.stats[slot::JOINED] == 1,
                            base: w.stats[slot::BASE],
                            records: wire::read_log(&path).map(|(r, _)| r).unwrap_or_default(),
                            clean: w.fate == Fate::Stopped,
                        }
                    })
                    .collect()
            })
            .collect();
        crate::broadcast::check(&publishers, &seats, tail)
    }
}

fn plant_arg(p: Plant) -> &'static str {
    match p {
        Plant::Lost => "lost",
        Plant::Duplicated => "duplicated",
        Plant::Reordered => "reordered",
        Plant::Torn => "torn",
        Plant::Leak => "leak",
        Plant::LostPermit => "lost-permit",
        Plant::BroadcastLost => "broadcast-lost",
        Plant::BroadcastTorn => "broadcast-torn",
        Plant::Stall => "stall",
    }
}

/// The last lines a worker wrote to its error file.
fn err_tail(dir: &Path, id: u32) -> String {
    let text = std::fs::read_to_string(dir.join(format!("w{id}.err"))).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {}", tail.join(" | "))
    }
}

fn create_objects(cfg: &Config, names: &Names) -> Result<Held, String> {
    let opts = Options::default().holders(256);
    let max_msg = wire::HEADER + cfg.payload;
    let mpmc = MpmcByteRing::create_with(&names.mpmc(), cfg.capacity, max_msg, &opts)
        .map_err(|e| io_err("create the MPMC ring", e))?;
    let spsc = (0..cfg.spsc)
        .map(|p| ByteRing::create_with(&names.spsc(p), cfg.capacity, max_msg, &opts))
        .collect::<tally::Result<Vec<_>>>()
        .map_err(|e| io_err("create an SPSC ring", e))?;
    let bcast = if cfg.subscribers > 0 {
        Some(crate::broadcast::create(
            &names.broadcast(),
            cfg.capacity,
            max_msg,
            &opts,
        )?)
    } else {
        None
    };
    let sem = Semaphore::create_resource_with(&names.semaphore(), cfg.permits, &opts)
        .map_err(|e| io_err("create the semaphore", e))?;
    let mutex = Mutex::<Counter>::create_with(&names.mutex(), [0; 4], &opts)
        .map_err(|e| io_err("create the mutex", e))?;
    let planted = if cfg.plant == Some(Plant::Leak) {
        Some(
            Region::create(&format!("{}.planted-leak", names.prefix), 4096)
                .map_err(|e| io_err("plant a leak", e))?,
        )
    } else {
        None
    };
    Ok(Held {
        mpmc,
        spsc,
        bcast,
        sem,
        mutex,
        planted,
    })
}

/// Runs the whole thing; the report says whether every check passed.
pub fn run(cfg: Config) -> Result<Report, String> {
    install_interrupt();
    let names = Names::new(&Names::fresh_prefix());
    let dir = std::env::temp_dir().join(format!("tally-{}", names.prefix));
    std::fs::create_dir_all(&dir).map_err(|e| io_err("create the run directory", e))?;
    let exe = std::env::current_exe().map_err(|e| io_err("find this program", e))?;
    let held = match create_objects(&cfg, &names) {
        Ok(h) => h,
        Err(e) => {
            cleanup(&names, &[]);
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    let mut runner = Runner {
        rng: Rng::derive(cfg.seed, 0),
        cfg,
        names,
        dir,
        exe,
        workers: Vec::new(),
        seats: Vec::new(),
        next_id: 1,
        kills: 0,
        hook_kills: 0,
        restarts: 0,
        failures: Vec::new(),
        planted_first: false,
    };
    // A panic of the runner itself still ends its workers and cleans up.
    let report =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drive(&mut runner, held)))
            .unwrap_or_else(|_| {
                Err("the runner panicked (see above); workers killed, objects removed".into())
            });
    runner.kill_all();
    let pids: Vec<u32> = runner.workers.iter().map(|w| w.pid).collect();
    cleanup(&runner.names, &pids);
    if !runner.cfg.keep_logs {
        let _ = std::fs::remove_dir_all(&runner.dir);
    }
    report
}

fn drive(r: &mut Runner, held: Held) -> Result<Report, String> {
    let cfg = r.cfg.clone();
    // A permit taken for good (`--plant lost-permit`): never returned.
    if cfg.plant == Some(Plant::LostPermit) {
        std::mem::forget(
            held.sem
                .acquire()
                .map_err(|e| io_err("plant a lost permit", e))?,
        );
    }
    let mut plan: Vec<(Role, u32)> = Vec::new();
    plan.extend((0..cfg.consumers).map(|_| (Role::MpmcConsumer, 0)));
    plan.extend((0..cfg.producers).map(|_| (Role::MpmcProducer, 0)));
    for p in 0..cfg.spsc {
        plan.push((Role::SpscConsumer, p));
        plan.push((Role::SpscProducer, p));
    }
    if cfg.subscribers > 0 {
        plan.extend((0..cfg.subscribers).map(|s| (Role::Subscriber, s)));
        plan.push((Role::Publisher, 0));
    }
    plan.extend((0..cfg.permit_workers).map(|_| (Role::Permits, 0)));
    plan.extend((0..cfg.mutex_workers).map(|_| (Role::Mutex, 0)));
    plan.extend((0..cfg.lifecycle).map(|_| (Role::Lifecycle, 0)));
    for (role, pair) in plan {
        let plant = match (cfg.plant, role) {
            (
                Some(p @ (Plant::Lost | Plant::Duplicated | Plant::Reordered)),
                Role::MpmcConsumer,
            )
            | (Some(p @ Plant::Torn), Role::MpmcProducer)
            | (Some(p @ Plant::BroadcastLost), Role::Subscriber)
            | (Some(p @ Plant::BroadcastTorn), Role::Publisher)
                if !r.planted_first =>
            {
                r.planted_first = true;
                Some(p)
            }
            _ => None,
        };
        let w = r.spawn(role, pair, plant)?;
        r.seats.push(w);
    }

    let start = Instant::now();
    let end = start + Duration::from_secs(cfg.seconds);
    let mut next_kill = cfg
        .kill_interval
        .map(|(lo, hi)| start + Duration::from_millis(r.rng.range(lo, hi)));
    let mut last_change: HashMap<Family, (u64, Instant)> = HashMap::new();
    let mut max_stall = Duration::ZERO;
    let mut watchdog: Option<String> = None;
    let mut progress = Progress::new(cfg.seconds, cfg.json);
    let mut next_look = start;
    let mut stall_at =
        (cfg.plant == Some(Plant::Stall)).then(|| start + Duration::from_millis(500));
    while Instant::now() < end && !INTERRUPTED.load(Ordering::Relaxed) {
        r.reap_and_replace()?;
        let now = Instant::now();
        if stall_at.is_some_and(|at| now >= at) {
            stall_at = None;
            for w in r
                .workers
                .iter()
                .filter(|w| w.child.is_some() && w.role == Role::MpmcConsumer)
            {
                // SAFETY: kill(2) of our own unreaped child.
                unsafe {
                    libc::kill(w.pid as libc::pid_t, libc::SIGSTOP);
                }
            }
        }
        if let Some(at) = next_kill
            && now >= at
        {
            r.kill_one()?;
            let (lo, hi) = cfg.kill_interval.expect("set");
            next_kill = Some(now + Duration::from_millis(r.rng.range(lo, hi)));
        }
        if now >= next_look {
            next_look = now + Duration::from_millis(20);
            let (fam, delivered, failures) = r.progress();
            for (f, total) in fam {
                let e = last_change.entry(f).or_insert((total, start));
                if total != e.0 {
                    *e = (total, now);
                }
                let stall = now - e.1;
                max_stall = max_stall.max(stall);
                if stall > cfg.stall && watchdog.is_none() {
                    watchdog = Some(format!(
                        "watchdog: the {f} made no progress for {} ms (recovery bound {} ms)\n{}",
                        stall.as_millis(),
                        cfg.stall.as_millis(),
                        r.dump_state()
                    ));
                }
            }
            progress.update(now - start, delivered, r.kills, failures);
            if watchdog.is_some() {
                break;
            }
        }
        let mut wake = next_look.min(end);
        if let Some(k) = next_kill {
            wake = wake.min(k);
        }
        std::thread::sleep(
            wake.saturating_duration_since(Instant::now())
                .min(Duration::from_millis(5)),
        );
    }
    let ran = start.elapsed();
    progress.finish();

    if let Some(w) = &watchdog {
        r.failures.push(w.clone());
        r.kill_all();
    } else {
        // Producers and everything else first; consumers then drain what is left.
        r.stop(|role| !role.is_consumer(), Duration::from_secs(15));
        r.stop(|role| role.is_consumer(), Duration::from_secs(15));
    }

    let ring = held.mpmc.info().ring;
    let mut verdict = r.check_queue(
        Role::MpmcProducer,
        Role::MpmcConsumer,
        None,
        Some(ring.as_ref().map_or(0, |i| i.redelivered)),
    );
    for p in 0..cfg.spsc {
        verdict.merge(r.check_queue(Role::SpscProducer, Role::SpscConsumer, Some(p), None));
    }

    let bcast = held
        .bcast
        .as_ref()
        .map(|b| r.check_broadcast(b, cfg.subscribers));

    let sum = |role: Role, i: usize| -> u64 {
        r.workers
            .iter()
            .filter(|w| w.role == role)
            .map(|w| w.stats[i])
            .sum()
    };

    // Permits: every worker is gone, so after a sweep every permit is back.
    let _ = held.sem.sweep();
    let available = held.sem.count();
    let max = held.sem.max();
    // Permits not back, plus any disagreement between the count and the holders'
    // records (available + recorded = maximum).
    let mut permit_errors = u64::from(max.abs_diff(available)) + sum(Role::Permits, slot::FAILURES);
    if let Some(tally::SyncInfo::Semaphore(s)) = held.sem.info().sync {
        let recorded: u64 = s.permits.iter().map(|&(_, n)| u64::from(n)).sum();
        let off = (u64::from(available) + recorded).abs_diff(u64::from(max));
        if off != 0 {
            permit_errors += off;
            r.failures.push(format!(
                "semaphore: {available} available + {recorded} recorded against holders != maximum {max}"
            ));
        }
    }
    if available != max {
        r.failures.push(format!(
            "semaphore: {available} of {max} permits available after every worker ended and a sweep"
        ));
    }

    // Mutex: the count lies between the acknowledged increments and those plus the
    // ambiguous ones (an owner that died between its increment and its acknowledgement).
    let acked = sum(Role::Mutex, slot::PROGRESS);
    let (count, ambiguous, abandonments) = match held.mutex.lock_timeout(Duration::from_secs(5)) {
        Ok(g) => (g[COUNT], g[AMBIGUOUS], 0),
        Err(tally::LockError::Abandoned(g)) => {
            (g[COUNT], g[AMBIGUOUS] + u64::from(g[PENDING] != 0), 1)
        }
        Err(e) => {
            r.failures.push(format!(
                "the runner could not lock the mutex at the end: {e}"
            ));
            (0, 0, 0)
        }
    };
    let mutex_abandonments = abandonments + sum(Role::Mutex, slot::RETRIES);
    let mut mutex_errors = sum(Role::Mutex, slot::FAILURES);
    if count < acked {
        mutex_errors += acked - count;
        r.failures.push(format!(
            "mutex: count {count} < {acked} increments acknowledged"
        ));
    } else if count > acked + ambiguous {
        mutex_errors += count - acked - ambiguous;
        r.failures.push(format!(
            "mutex: count {count} > {acked} acknowledged + {ambiguous} ambiguous"
        ));
    }

    let all_pids: Vec<u32> = r.workers.iter().map(|w| w.pid).collect();
    let Held {
        mpmc,
        spsc,
        bcast: bcast_ring,
        sem,
        mutex,
        planted,
    } = held;
    drop((mpmc, spsc, bcast_ring, sem, mutex));
    let (leaked, swept) = leak_check(&r.names, &all_pids);
    drop(planted);

    let worker_failures = r
        .workers
        .iter()
        .filter(|w| matches!(w.fate, Fate::Failed(_)))
        .count() as u64
        + sum(Role::MpmcProducer, slot::FAILURES)
        + sum(Role::MpmcConsumer, slot::FAILURES)
        + sum(Role::SpscProducer, slot::FAILURES)
        + sum(Role::SpscConsumer, slot::FAILURES)
        + sum(Role::Publisher, slot::FAILURES)
        + sum(Role::Subscriber, slot::FAILURES);
    for w in &r.workers {
        let t = err_tail(&r.dir, w.id);
        if !t.is_empty() && !matches!(w.fate, Fate::Failed(_)) {
            r.failures
                .push(format!("worker {} ({}){t}", w.id, w.role.label()));
        }
    }
    for (name, why) in &leaked {
        r.failures.push(format!("leaked: {name} ({why})"));
    }
    Ok(Report {
        seconds: ran.as_secs_f64(),
        producers: cfg.producers,
        consumers: cfg.consumers,
        spsc: cfg.spsc,
        subscribers: cfg.subscribers,
        broadcast: bcast,
        payload: cfg.payload,
        seed: cfg.seed,
        prefix: r.names.prefix.clone(),
        kill_interval_ms: cfg.kill_interval,
        verdict,
        kills: r.kills,
        hook_kills: r.hook_kills,
        restarts: r.restarts,
        lifecycle_cycles: sum(Role::Lifecycle, slot::PROGRESS),
        lifecycle_retries: sum(Role::Lifecycle, slot::RETRIES),
        lifecycle_failures: sum(Role::Lifecycle, slot::FAILURES),
        leaked_segments: leaked.len() as u64,
        swept_at_end: swept,
        permits_taken: sum(Role::Permits, slot::PROGRESS),
        permit_errors,
        permits_available: available,
        permits_max: max,
        mutex_increments: acked,
        mutex_count: count,
        mutex_ambiguous: ambiguous,
        mutex_abandonments,
        mutex_errors,
        ring_skipped: ring.as_ref().map_or(0, |i| i.skipped),
        ring_redelivered: ring.as_ref().map_or(0, |i| i.redelivered),
        worker_failures,
        max_stall_ms: max_stall.as_millis() as u64,
        watchdog: watchdog.is_some(),
        interrupted: INTERRUPTED.load(Ordering::Relaxed),
        failures: r.failures.clone(),
    })
}

/// After the runner dropped its handles: sweeps every object of the run (reclaiming
/// killed holders nobody looked at since), removes creation debris of the run's dead
/// creators through a create, and returns what is still there (the leaks) and how many
/// objects the sweep removed.
fn leak_check(names: &Names, pids: &[u32]) -> (Vec<(String, String)>, u64) {
    let mut swept = 0;
    for n in tally::admin::list().unwrap_or_default() {
        if names.owns(&n)
            && let Ok(rep) = tally::admin::sweep(&n)
        {
            swept += rep.unlinked.len() as u64;
        }
    }
    // A create removes the debris of dead creators (P5).
    drop(Region::create(&format!("{}.probe", names.prefix), 64));
    let mut leaked: Vec<(String, String)> = tally::admin::list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| names.owns(n))
        .map(|n| {
            let why = match tally::admin::inspect(&n) {
                Ok(i) => format!(
                    "{} {}, refcount {}, holders {:?}",
                    i.kind,
                    i.state,
                    i.refcount,
                    i.holders
                        .iter()
                        .map(|h| (h.pid, h.alive))
                        .collect::<Vec<_>>()
                ),
                Err(e) => e.to_string(),
            };
            (n, why)
        })
        .collect();
    for c in tally::admin::creations().unwrap_or_default() {
        if c.builder_pid.is_some_and(|p| pids.contains(&p)) {
            leaked.push((
                c.temp_name.clone(),
                format!("creation debris of worker pid {:?}", c.builder_pid),
            ));
        }
    }
    (leaked, swept)
}

/// Removes whatever of the run is left in /dev/shm, whatever happened: a failed run
/// leaves nothing behind either.
fn cleanup(names: &Names, pids: &[u32]) {
    for n in tally::admin::list().unwrap_or_default() {
        if names.owns(&n) {
            let _ = tally::admin::remove(&n);
        }
    }
    for c in tally::admin::creations().unwrap_or_default() {
        if c.builder_pid.is_some_and(|p| pids.contains(&p)) && c.would_sweep {
            let _ = std::fs::remove_file(Path::new("/dev/shm").join(&c.temp_name));
        }
    }
}
