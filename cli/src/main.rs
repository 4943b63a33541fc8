//! `tally`: inspect and administer tally objects, hold them, and benchmark.
//!
//! Exit codes: see [`EXIT_CODES`].

mod admin_cmd;
mod bench;
mod human;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{Parser, Subcommand};

/// What `tally --help` says about exit codes; README's table says the same.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure (an object could not be read or changed; a benchmark failed;
     `sweep` reported objects it could not sweep)
  2  usage error: unknown option or subcommand, a value out of range, an invalid name
  3  object not found
Every error is one line on stderr: `tally: error: ...`.";

#[derive(Parser)]
#[command(
    name = "tally",
    version,
    about = "Crash-safe shared-memory objects: administer, hold, benchmark",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every tally object (name, kind, size, refcount, live and dead holders), and
    /// objects being created or left half-made by a dead creator.
    Ls {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show one object in detail, with each holder's pid and liveness.
    Inspect {
        /// Object name (without the `tally.` prefix).
        name: String,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Reclaim dead holders of one object, or of all; unlink objects with none alive.
    /// Exits 1 if some object could not be swept.
    Sweep {
        /// Object name; all objects when omitted.
        name: Option<String>,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Unlink an object by force (live holders keep their mapping).
    Rm {
        /// Object name.
        name: String,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Measure latency and throughput against the floor, a pipe and a Unix socket, and
    /// what creating, opening, closing and sweeping objects costs (`lifecycle`).
    Bench(bench::BenchArgs),
    /// The other process of a benchmark (started by `tally bench`).
    #[command(hide = true)]
    BenchPeer(bench::PeerArgs),
    /// Hold an object open until SIGINT/SIGTERM or end of stdin; prints `ready` once attached.
    Hold {
        /// Object name.
        name: String,
        /// Create a byte region of this many bytes if no live object has the name.
        #[arg(long, value_name = "N")]
        create_bytes: Option<usize>,
        /// Accept an object owned by another user.
        #[arg(long)]
        allow_foreign_owner: bool,
        /// Hold until SIGTERM or SIGINT only, ignoring stdin (for a script's
        /// background job, whose stdin is /dev/null).
        #[arg(long)]
        until_signal: bool,
    },
}

/// Why a command failed, and so its exit code.
#[derive(Debug)]
pub enum Failure {
    /// Exit 2: bad usage (options, values, names).
    Usage(String),
    /// Exit 3: the object does not exist.
    NotFound(String),
    /// Exit 1: anything else.
    Failed(String),
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
            Failure::Usage(m) | Failure::NotFound(m) | Failure::Failed(m) => m,
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

/// clap's error as one line: its first paragraph, without its `error: ` prefix, and
/// the usage of the command it concerns.
fn clap_failure(e: &clap::Error) -> Failure {
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return Failure::Usage("a subcommand is required; `tally --help` lists them".into());
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
        None => Failure::Usage(format!("{what} (see `tally --help`)")),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            // Help and version go to stdout and exit 0.
            e.exit()
        }
        Err(e) => return fail(&clap_failure(&e)),
    };
    // `tally ls | head` should end quietly. `hold` keeps Rust's default (writes fail
    // with EPIPE) so that it still detaches cleanly when its reader goes away.
    if !matches!(cli.command, Command::Hold { .. }) {
        tally::__private::default_sigpipe();
    }
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::BenchPeer(args) => {
            bench::peer::run(args).map_err(|e| Failure::Failed(e.to_string()))
        }
        Command::Ls { json } => admin_cmd::ls(json),
        Command::Inspect { name, json } => admin_cmd::inspect(&name, json),
        Command::Sweep { name, json } => admin_cmd::sweep(name.as_deref(), json),
        Command::Rm { name, json } => admin_cmd::rm(&name, json).map_err(Failure::from),
        Command::Hold {
            name,
            create_bytes,
            allow_foreign_owner,
            until_signal,
        } => admin_cmd::hold(&name, create_bytes, allow_foreign_owner, until_signal)
            .map_err(Failure::from),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => fail(&f),
    }
}

/// Prints the one error line and gives the exit code.
fn fail(f: &Failure) -> ExitCode {
    // One line, whatever the message holds.
    let msg = f.message().replace('\n', "; ");
    eprintln!("tally: error: {msg}");
    ExitCode::from(f.code())
}
