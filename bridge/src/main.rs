//! `tally-bridge`: carries a tally ring's messages over Zenoh, so consumers on other
//! hosts (or in other languages) read what a local producer writes.
//!
//! `export NAME --key K` reads ring NAME as its consumer and publishes each message on
//! key expression K; `import --key K NAME` subscribes to K and writes each message into
//! ring NAME (created if missing). The wire format is in `wire.rs` and bridge/README.md.

mod bench;
mod bridge;
mod local;
mod wire;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand};

const EXIT_CODES: &str = "\
Exit codes:
  0  success (stopped by SIGINT or SIGTERM)
  1  failure (Zenoh could not start; a layout mismatch; a local object could not be used)
  2  usage error: unknown option, a bad value, a bad Zenoh configuration
  3  object not found (export: the ring does not exist)
Every error is one line on stderr: `tally-bridge: error: ...`.";

#[derive(Parser)]
#[command(
    name = "tally-bridge",
    version,
    about = "Bridge tally rings over Zenoh: export a local ring to a key expression, import one into a local ring",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read ring NAME as its consumer and publish each message on --key.
    Export(ExportArgs),
    /// Subscribe to --key and write each message into ring NAME (created if missing).
    Import(ImportArgs),
    /// Measure the bridge pair against a plain Zenoh publisher -> subscriber, over
    /// localhost TCP, for 8-byte and 4096-byte payloads.
    Bench(bench::BenchArgs),
}

/// Zenoh session options, as Zenoh's own tools take them.
#[derive(Args, Clone, Debug, Default)]
pub struct ZenohArgs {
    /// An endpoint to connect to (e.g. tcp/192.168.1.2:7447); repeatable.
    #[arg(long = "connect", short = 'e', value_name = "ENDPOINT")]
    pub connect: Vec<String>,
    /// An endpoint to listen on (e.g. tcp/0.0.0.0:7447); repeatable.
    #[arg(long = "listen", short = 'l', value_name = "ENDPOINT")]
    pub listen: Vec<String>,
    /// A Zenoh configuration file (JSON5, Zenoh's own format); the other options
    /// override it.
    #[arg(long = "config", short = 'c', value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Zenoh session mode.
    #[arg(long, short = 'm', value_parser = ["peer", "client"])]
    pub mode: Option<String>,
    /// A Zenoh configuration entry KEY:VALUE (VALUE in JSON5), e.g.
    /// `scouting/multicast/enabled:false`; repeatable.
    #[arg(long = "cfg", value_name = "KEY:VALUE")]
    pub cfg: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The local ring to export (a typed or byte SPSC ring: the bridge takes its
    /// consumer role; a typed or byte broadcast ring: the bridge subscribes).
    pub name: String,
    /// The Zenoh key expression to publish on.
    #[arg(long, value_name = "KEYEXPR")]
    pub key: String,
    /// Release each message once published instead of once an importer acknowledges
    /// it: for plain Zenoh subscribers that do not acknowledge. A SIGKILLed exporter
    /// may then lose the messages Zenoh had queued.
    #[arg(long)]
    pub no_ack: bool,
    #[command(flatten)]
    pub zenoh: ZenohArgs,
    /// Print a JSON status line to stdout once a second and at exit.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// The Zenoh key expression to subscribe to.
    #[arg(long, value_name = "KEYEXPR")]
    pub key: String,
    /// The local ring (or broadcast ring) to write into; the bridge takes its producer
    /// (publisher) role.
    pub name: String,
    /// Slots of the ring if the bridge creates it (default: the exported ring's).
    #[arg(long)]
    pub capacity: Option<usize>,
    /// The payload's canonical schema (as `tally inspect` shows it) if the bridge
    /// creates the ring; by default it asks the exporter (`KEY/@tally`).
    #[arg(long, value_name = "SCHEMA")]
    pub schema: Option<String>,
    /// With `--schema bytes`: the longest message of the byte ring the bridge creates.
    #[arg(long, value_name = "BYTES")]
    pub max_message: Option<usize>,
    /// The kind of ring the bridge creates (default: the exported ring's kind, or
    /// `ring` with `--schema`).
    #[arg(long, value_parser = ["ring", "broadcast"])]
    pub kind: Option<String>,
    /// A broadcast ring's policy if the bridge creates one (default: the exported
    /// ring's, or lossless).
    #[arg(long, value_parser = ["lossless", "lossy"])]
    pub policy: Option<String>,
    /// How long to wait for an exporter to describe the payload, in seconds.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    pub wait: f64,
    /// A file keeping the last sequence written, so a restarted importer counts what
    /// was lost while it was down.
    #[arg(long, value_name = "FILE")]
    pub state: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub zenoh: ZenohArgs,
    /// Print a JSON status line to stdout once a second and at exit.
    #[arg(long)]
    pub json: bool,
}

/// Why a command failed, and its exit code.
#[derive(Debug)]
pub enum Failure {
    Usage(String),
    Failed(String),
    NotFound(String),
}

impl Failure {
    fn code(&self) -> u8 {
        match self {
            Failure::Failed(_) => 1,
            Failure::Usage(_) => 2,
            Failure::NotFound(_) => 3,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Usage(m) | Failure::Failed(m) | Failure::NotFound(m) => m,
        }
    }
}

impl From<tally::Error> for Failure {
    fn from(e: tally::Error) -> Self {
        match e {
            tally::Error::NotFound(_) => Failure::NotFound(e.to_string()),
            tally::Error::InvalidName { .. } | tally::Error::InvalidArgument(_) => {
                Failure::Usage(e.to_string())
            }
            _ => Failure::Failed(e.to_string()),
        }
    }
}

/// clap's error as one line, as the `tally` CLI prints it.
fn clap_failure(e: &clap::Error) -> Failure {
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return Failure::Usage("a subcommand is required; `tally-bridge --help` lists them".into());
    }
    let text = e.render().to_string();
    let what: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    let what = what.join(" ");
    let what = what.strip_prefix("error: ").unwrap_or(&what);
    match text.lines().find_map(|l| l.trim().strip_prefix("Usage: ")) {
        Some(usage) => Failure::Usage(format!("{what} (usage: {usage})")),
        None => Failure::Usage(format!("{what} (see `tally-bridge --help`)")),
    }
}

/// Blocks SIGINT and SIGTERM in this thread (and so in every thread started later)
/// and sets the returned flag when one arrives.
fn stop_on_signal() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    // SAFETY: a zeroed sigset_t is a valid argument to sigemptyset, which initialises
    // it; pthread_sigmask only reads it.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let flag = stop.clone();
    std::thread::spawn(move || {
        let mut sig = 0;
        // SAFETY: `set` is an initialised sigset_t; sigwait writes `sig`.
        unsafe { libc::sigwait(&set, &mut sig) };
        // SYNC POINT: Release pairs with the Acquire loads of the bridge loops.
        flag.store(true, Ordering::Release);
    });
    stop
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            e.exit()
        }
        Err(e) => return fail(&clap_failure(&e)),
    };
    let result = match cli.command {
        Command::Export(args) => {
            let stop = stop_on_signal();
            bridge::export_command(&args, stop)
        }
        Command::Import(args) => {
            let stop = stop_on_signal();
            bridge::import_command(&args, stop)
        }
        Command::Bench(args) => bench::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(&f),
    }
}

fn fail(f: &Failure) -> ExitCode {
    let msg = f.message().replace('\n', "; ");
    eprintln!("tally-bridge: error: {msg}");
    ExitCode::from(f.code())
}

/// A seconds value for `Duration::from_secs_f64`, or a usage error.
pub fn seconds(what: &str, s: f64) -> Result<Duration, Failure> {
    if s.is_finite() && (0.0..=1e9).contains(&s) {
        Ok(Duration::from_secs_f64(s))
    } else {
        Err(Failure::Usage(format!(
            "{what} {s}: expected seconds, 0 to 1e9"
        )))
    }
}
