//! `tally`: inspect and administer tally objects, hold them, and benchmark.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error, 3 object not found.

mod admin_cmd;
mod bench;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tally",
    version,
    about = "Crash-safe shared-memory objects: administer, hold, benchmark"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every tally object: name, kind, size, refcount, live and dead holders.
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
    /// Measure latency and throughput against the floor, a pipe and a Unix socket.
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `tally ls | head` should end quietly. `hold` keeps Rust's default (writes fail
    // with EPIPE) so that it still detaches cleanly when its reader goes away.
    if !matches!(cli.command, Command::Hold { .. }) {
        tally::__private::default_sigpipe();
    }
    let result = match cli.command {
        Command::Bench(args) => return report(bench::run(args)),
        Command::BenchPeer(args) => return report(bench::peer::run(args)),
        Command::Ls { json } => admin_cmd::ls(json),
        Command::Inspect { name, json } => admin_cmd::inspect(&name, json),
        Command::Sweep { name, json } => admin_cmd::sweep(name.as_deref(), json),
        Command::Rm { name, json } => admin_cmd::rm(&name, json),
        Command::Hold {
            name,
            create_bytes,
            allow_foreign_owner,
        } => admin_cmd::hold(&name, create_bytes, allow_foreign_owner),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tally: error: {e}");
            match e {
                tally::Error::NotFound(_) => ExitCode::from(3),
                tally::Error::InvalidName { .. } | tally::Error::InvalidArgument(_) => {
                    ExitCode::from(2)
                }
                _ => ExitCode::FAILURE,
            }
        }
    }
}

fn report(r: Result<(), bench::BenchError>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tally: error: {e}");
            ExitCode::FAILURE
        }
    }
}
