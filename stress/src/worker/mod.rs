//! Worker processes: the runner starts itself again as `tally-stress worker --role ...`.
//!
//! Every worker opens the objects the runner created (by the run's name prefix), keeps
//! its counters in a mapped stats file (see [`crate::stats`]), writes what went wrong to
//! its `.err` file, and stops cleanly on SIGTERM. It dies with the runner (parent-death
//! signal), so a crashed runner leaves no worker behind.

mod lifecycle;
mod queue;
pub mod sync;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::names::Names;
use crate::rng::Rng;
use crate::stats::{Stats, slot};

/// What a worker process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Role {
    /// Sends sequenced messages on the MPMC ring.
    MpmcProducer,
    /// Receives from the MPMC ring and logs each message.
    MpmcConsumer,
    /// The producer of one SPSC ring (`--pair`).
    SpscProducer,
    /// The consumer of one SPSC ring (`--pair`).
    SpscConsumer,
    /// The publisher of the broadcast ring.
    Publisher,
    /// A subscriber of the broadcast ring (`--pair`: its seat); logs each message.
    Subscriber,
    /// Takes and returns permits of the resource semaphore.
    Permits,
    /// Increments the counter inside the mutex.
    Mutex,
    /// Races open_or_create, use and drop on a few names.
    Lifecycle,
}

impl Role {
    /// The name used in reports.
    pub fn label(self) -> &'static str {
        match self {
            Role::MpmcProducer => "mpmc-producer",
            Role::MpmcConsumer => "mpmc-consumer",
            Role::SpscProducer => "spsc-producer",
            Role::SpscConsumer => "spsc-consumer",
            Role::Publisher => "publisher",
            Role::Subscriber => "subscriber",
            Role::Permits => "permits",
            Role::Mutex => "mutex",
            Role::Lifecycle => "lifecycle",
        }
    }

    /// Whether it consumes a queue (stopped after every producer, so it can drain).
    pub fn is_consumer(self) -> bool {
        matches!(
            self,
            Role::MpmcConsumer | Role::SpscConsumer | Role::Subscriber
        )
    }
}

/// A fault a worker plants on purpose, to prove the checks can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Plant {
    /// A consumer does not log one message it received (a lost message).
    Lost,
    /// A consumer logs one message twice (a duplicate).
    Duplicated,
    /// A consumer logs one message after the next one of its producer (reordered).
    Reordered,
    /// A producer sends one message with a wrong checksum (torn).
    Torn,
    /// The runner keeps one segment of the run open past the end (a leak).
    Leak,
    /// The runner takes one permit and never returns it (a lost permit).
    LostPermit,
    /// A broadcast subscriber does not log one message it received (lost).
    BroadcastLost,
    /// The broadcast publisher sends one message with a wrong checksum (torn).
    BroadcastTorn,
    /// The runner stops (SIGSTOP) every MPMC consumer half a second in: the watchdog
    /// must fire.
    Stall,
}

/// Arguments of `tally-stress worker`.
#[derive(Clone, Debug, clap::Args)]
pub struct WorkerArgs {
    /// What this worker does.
    #[arg(long, value_enum)]
    pub role: Role,
    /// Its id: unique in the run, also its producer id.
    #[arg(long)]
    pub id: u32,
    /// The run's name prefix.
    #[arg(long)]
    pub prefix: String,
    /// The run's directory (logs, stats).
    #[arg(long)]
    pub dir: PathBuf,
    /// The run's seed.
    #[arg(long)]
    pub seed: u64,
    /// Largest payload in bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Which SPSC pair.
    #[arg(long, default_value_t = 0)]
    pub pair: u32,
    /// Subscriber seats of the broadcast ring (the first publisher waits for them).
    #[arg(long, default_value_t = 0)]
    pub subscribers: u32,
    /// Kill itself at random steps of the library's test hooks.
    #[arg(long)]
    pub chaos: bool,
    /// A fault to plant.
    #[arg(long, value_enum)]
    pub plant: Option<Plant>,
}

/// Set by SIGTERM: finish the current operation and stop.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_sig: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Whether the runner asked this worker to stop.
pub fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Installs `on_term` for SIGTERM and SIGINT, and dies with the parent.
fn install_signals() {
    // SAFETY: `on_term` only stores to an atomic, which is async-signal-safe; the
    // sigaction struct is zeroed then filled, as sigaction(2) expects.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_term as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
}

/// What a worker has at hand.
pub struct Ctx {
    /// Its arguments.
    pub args: WorkerArgs,
    /// The run's object names.
    pub names: Names,
    /// Its counters.
    pub stats: Stats,
    /// Its own random stream.
    pub rng: Rng,
    err: std::fs::File,
}

impl Ctx {
    /// Notes a failure in the `.err` file (read by the runner) and counts it.
    pub fn fail(&mut self, what: std::fmt::Arguments<'_>) {
        self.stats.bump(slot::FAILURES);
        let _ = writeln!(
            self.err,
            "{} {}: {what}",
            self.args.role.label(),
            self.args.id
        );
    }
}

/// The state of the self-kill hooks: a random stream shared by the hook functions
/// (plain `fn`s, so it lives in a static).
static HOOK_RNG: AtomicU64 = AtomicU64::new(0);

/// Called from the library's test hooks: with probability 1 in `one_in`, SIGKILL
/// this process right here, in the middle of the library's step.
pub fn maybe_die(one_in: u64) {
    let s = HOOK_RNG.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
    if crate::rng::mix(s).is_multiple_of(one_in) {
        // SAFETY: kill(2) on our own pid; no memory is involved.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

/// Runs the worker; returns the process exit code.
pub fn run(args: WorkerArgs) -> i32 {
    install_signals();
    let names = Names::new(&args.prefix);
    let stats_path = args.dir.join(format!("w{}.stats", args.id));
    let err_path = args.dir.join(format!("w{}.err", args.id));
    let (stats, err) = match (
        Stats::create(&stats_path),
        std::fs::File::options()
            .create(true)
            .append(true)
            .open(&err_path),
    ) {
        (Ok(s), Ok(e)) => (s, e),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("tally-stress worker {}: cannot set up: {e}", args.id);
            return 3;
        }
    };
    let rng = Rng::derive(args.seed, u64::from(args.id));
    HOOK_RNG.store(
        Rng::derive(args.seed, u64::from(args.id) | 1 << 40).next_u64(),
        Ordering::Relaxed,
    );
    let mut ctx = Ctx {
        args,
        names,
        stats,
        rng,
        err,
    };
    let r = match ctx.args.role {
        Role::MpmcProducer | Role::SpscProducer => queue::produce(&mut ctx),
        Role::MpmcConsumer | Role::SpscConsumer => queue::consume(&mut ctx),
        Role::Publisher => crate::broadcast::publish(&mut ctx),
        Role::Subscriber => crate::broadcast::subscribe(&mut ctx),
        Role::Permits => sync::permits(&mut ctx),
        Role::Mutex => sync::mutex(&mut ctx),
        Role::Lifecycle => lifecycle::run(&mut ctx),
    };
    match r {
        Ok(()) => {
            ctx.stats.set(slot::CLEAN_EXIT, 1);
            0
        }
        Err(e) => {
            ctx.fail(format_args!("gave up: {e}"));
            1
        }
    }
}
