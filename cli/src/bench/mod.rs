//! `tally bench`: latency and throughput between two real processes, against the
//! physical floor (one shared cache line), a pipe and a Unix socket, in the same run.
//!
//! The binary re-executes itself (`tally bench-peer ...`) for the other side.

mod latency;
pub mod peer;
mod plot;
mod sync;
mod throughput;

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

pub use peer::PeerArgs;

/// Which benchmark.
#[derive(Subcommand, Clone, Copy, Debug)]
pub enum Which {
    /// One-way latency (round trip / 2) of ping-pong, with floor, pipe and socket.
    Latency,
    /// One-way stream rate, with and without the batch API, and copying.
    Throughput,
    /// Semaphore, mutex and event: hand-off latency and uncontended cost, against
    /// POSIX semaphores, a robust pthread mutex, a raw futex wake and the floor.
    Sync,
}

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Option<Which>,
    /// Payload bytes per message (8 to 1048576).
    #[arg(long, default_value_t = 8, global = true)]
    pub payload: usize,
    /// Round trips per latency measurement.
    #[arg(long, default_value_t = 200_000, global = true)]
    pub iters: u64,
    /// Seconds per throughput measurement.
    #[arg(long, default_value_t = 2.0, global = true)]
    pub seconds: f64,
    /// Two CPUs to pin the two processes to, e.g. `0,1` (default: the first two).
    #[arg(long, value_delimiter = ',', global = true)]
    pub cpus: Option<Vec<usize>>,
    /// Print one JSON object instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Draw the latency CDF of tally and the baselines to this SVG file.
    #[arg(long, value_name = "FILE.svg", global = true)]
    pub plot: Option<std::path::PathBuf>,
}

/// Transport of a latency or throughput peer.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Tally,
    TallyU64,
    Floor,
    Pipe,
    Uds,
    TallyWake,
    FutexWake,
    Stream,
    StreamBatch,
    StreamCopy,
}

pub type BenchError = Box<dyn std::error::Error>;

pub fn run(args: BenchArgs) -> Result<(), BenchError> {
    if !(8..=1 << 20).contains(&args.payload) {
        return Err(format!("--payload {} outside 8..=1048576", args.payload).into());
    }
    if args.iters == 0 || !(args.seconds > 0.0 && args.seconds <= 3600.0) {
        return Err("--iters must be positive and --seconds in (0, 3600]".into());
    }
    let cpus = match args.cpus.as_deref() {
        Some(&[a, b]) if a != b => (a, b),
        Some(_) => return Err("--cpus takes two different CPUs, e.g. --cpus 0,1".into()),
        None => (0, 1),
    };
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus.0 >= ncpu || cpus.1 >= ncpu {
        return Err(format!(
            "--cpus {},{}: this machine has CPUs 0..{}",
            cpus.0,
            cpus.1,
            ncpu - 1
        )
        .into());
    }
    let mut out = serde_json::Map::new();
    if matches!(args.which, None | Some(Which::Latency)) {
        let report = latency::run(&args, cpus)?;
        if let Some(path) = &args.plot {
            plot::cdf(path, &report, args.payload)?;
        }
        if !args.json {
            latency::print(&report, &args, cpus);
        }
        out.insert("latency".into(), latency::to_json(&report, &args));
    }
    if matches!(args.which, None | Some(Which::Throughput)) {
        let report = throughput::run(&args, cpus)?;
        if !args.json {
            throughput::print(&report, &args, cpus);
        }
        out.insert("throughput".into(), throughput::to_json(&report, &args));
    }
    if matches!(args.which, Some(Which::Sync)) {
        let report = sync::run(&args, cpus)?;
        if !args.json {
            sync::print(&report);
        }
        out.insert("sync".into(), sync::to_json(&report));
    }
    if args.json {
        let v = if out.len() == 1 {
            out.into_iter()
                .next()
                .map(|(_, v)| v)
                .unwrap_or(Value::Null)
        } else {
            Value::Object(out)
        };
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    Ok(())
}

/// A unique object name for one benchmark run.
pub fn bench_name(what: &str) -> String {
    format!(
        "bench-{}-{}-{}",
        std::process::id(),
        what,
        tally::__private::monotonic_ns() % 1_000_000
    )
}

/// The other process of a measurement, talking over its stdin/stdout.
pub struct Peer {
    child: Child,
    pub stdin: Option<ChildStdin>,
    pub stdout: BufReader<ChildStdout>,
}

impl Peer {
    /// Starts `tally bench-peer` and waits for its `ready` line.
    pub fn spawn(
        mode: Mode,
        name: &str,
        payload: usize,
        cpu: usize,
        extra: &[(&str, String)],
    ) -> Result<Peer, BenchError> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.arg("bench-peer")
            .arg("--mode")
            .arg(
                mode.to_possible_value()
                    .expect("no skipped variants")
                    .get_name(),
            )
            .arg("--name")
            .arg(name)
            .arg("--payload")
            .arg(payload.to_string())
            .arg("--cpu")
            .arg(cpu.to_string());
        for (k, v) in extra {
            cmd.arg(format!("--{k}")).arg(v);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("peer has no stdout")?);
        let mut peer = Peer {
            child,
            stdin,
            stdout,
        };
        let line = peer.line()?;
        if line != "ready" {
            return Err(format!("peer said {line:?} instead of ready").into());
        }
        Ok(peer)
    }

    /// Reads one line from the peer.
    pub fn line(&mut self) -> Result<String, BenchError> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            return Err("peer exited early".into());
        }
        Ok(line.trim_end().to_owned())
    }

    /// Closes the peer's stdin and waits for it to exit successfully.
    pub fn finish(mut self) -> Result<(), BenchError> {
        drop(self.stdin.take());
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("bench peer failed: {status}").into());
        }
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Writes `seq` and fills the rest: the producer writes the whole payload.
#[inline]
pub fn fill_payload(buf: &mut [u8], seq: u64) {
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..].fill(seq as u8);
}

/// Reads the whole payload (folding it so the reads cannot be skipped); returns seq.
#[inline]
pub fn read_payload(buf: &[u8]) -> u64 {
    let seq = u64::from_le_bytes(buf[..8].try_into().expect("payload >= 8 bytes"));
    let rest = &buf[8..];
    let words = rest.chunks_exact(8);
    let tail = words
        .remainder()
        .iter()
        .fold(0u64, |a, &b| a.rotate_left(8) ^ b as u64);
    // Fixed-size words so the fold vectorises: reading is not the bottleneck.
    let acc = words.fold(tail, |a, w| {
        a ^ u64::from_le_bytes(w.try_into().expect("8-byte chunk"))
    });
    std::hint::black_box(acc);
    seq
}

/// Latency summary of one histogram, in nanoseconds.
pub fn summary(h: &Histogram<u64>) -> Value {
    json!({
        "p50_ns": h.value_at_quantile(0.50),
        "p90_ns": h.value_at_quantile(0.90),
        "p99_ns": h.value_at_quantile(0.99),
        "p999_ns": h.value_at_quantile(0.999),
        "max_ns": h.max(),
        "mean_ns": (h.mean() * 10.0).round() / 10.0,
    })
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds")
}
