//! `tally bench`: latency and throughput between two real processes, against the
//! physical floors (one shared cache line; one line per direction), a pipe and a Unix
//! socket, in the same run.
//!
//! The binary re-executes itself (`tally bench-peer ...`) for the other side.

mod broadcast;
mod latency;
mod lifecycle;
mod mpmc;
pub mod peer;
mod plot;
mod progress;
mod sync;
mod throughput;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use clap::{Args, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

pub use peer::PeerArgs;
use progress::Progress;

use crate::Failure;

/// Which benchmark.
#[derive(Subcommand, Clone, Copy, Debug)]
pub enum Which {
    /// One-way latency (round trip / 2) of ping-pong, with floors, pipe and socket.
    Latency,
    /// One-way stream rate, with and without the batch API, and copying.
    Throughput,
    /// Semaphore, mutex and event: hand-off latency and uncontended cost, against
    /// POSIX semaphores, a robust pthread mutex, a raw futex wake and the floor.
    Sync,
    /// Create, open, close and sweep of named objects, with 1 to 512 other holder
    /// processes, against the raw shm system calls and POSIX named semaphores (a plain
    /// `tally bench` runs it too, with --ops = --iters / 2000, at most 100).
    Lifecycle(lifecycle::LifecycleArgs),
}

/// Largest payload a run accepts.
const MAX_PAYLOAD: usize = 1 << 20;

#[derive(Args, Clone, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Option<Which>,
    /// Payload bytes per message (8 to 1048576).
    #[arg(long, default_value_t = 8, global = true, value_parser = parse_payload)]
    pub payload: usize,
    /// Round trips per latency measurement (at least 1).
    #[arg(long, default_value_t = 200_000, global = true,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub iters: u64,
    /// Seconds per throughput measurement (more than 0, at most 3600).
    #[arg(long, default_value_t = 2.0, global = true, value_parser = parse_seconds)]
    pub seconds: f64,
    /// Two different CPUs to pin the two processes to, e.g. `0,1` (default: 0,1).
    #[arg(long, global = true, value_name = "A,B", value_parser = parse_cpus)]
    pub cpus: Option<CpuPair>,
    /// Print one JSON object instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress on stderr.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Draw an SVG: latency CDFs of tally and the baselines, throughput bars in
    /// M msgs/s, or both side by side. The file is created before the run.
    #[arg(long, value_name = "FILE.svg", global = true)]
    pub plot: Option<PathBuf>,
    /// Measure the MPMC ring instead: P producer and C consumer processes (each 1 to
    /// 31), against tally's SPSC ring and crossbeam's ArrayQueue with P + C threads.
    /// Latency takes only 1,1.
    #[arg(long, value_name = "P,C", global = true, value_parser = mpmc::parse_spec)]
    pub mpmc: Option<mpmc::Spec>,
    /// Measure the broadcast ring instead: this process publishes to N subscriber
    /// processes (1 to 31), lossless, against one SPSC ring per subscriber with the
    /// publisher copying into each. Latency: commit to the last subscriber's
    /// acknowledgement / 2, with the two-line floor.
    #[arg(long, value_name = "N", global = true, value_parser = broadcast::parse_count)]
    pub broadcast: Option<usize>,
}

/// The two CPUs of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuPair(pub usize, pub usize);

fn parse_payload(s: &str) -> Result<usize, String> {
    let n: usize = s.parse().map_err(|e| format!("{e}"))?;
    if !(8..=MAX_PAYLOAD).contains(&n) {
        return Err(format!("{n} is outside 8..={MAX_PAYLOAD}"));
    }
    Ok(n)
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let x: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if !(x > 0.0 && x <= 3600.0) {
        return Err(format!("{s} is outside (0, 3600]"));
    }
    Ok(x)
}

fn parse_cpus(s: &str) -> Result<CpuPair, String> {
    let parts: Vec<&str> = s.split(',').collect();
    let [a, b] = parts[..] else {
        return Err("takes two CPUs, e.g. 0,1".into());
    };
    let cpu = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|e| format!("{x:?} is not a CPU number ({e})"))
    };
    let (a, b) = (cpu(a)?, cpu(b)?);
    if a == b {
        return Err(format!("takes two different CPUs, not {a} twice"));
    }
    let n = online_cpus();
    if a >= n || b >= n {
        return Err(format!("this machine has CPUs 0..={}", n - 1));
    }
    Ok(CpuPair(a, b))
}

fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Transport of a latency or throughput peer.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Tally,
    TallyU64,
    Floor,
    TwoLine,
    Pipe,
    Uds,
    TallyWake,
    FutexWake,
    Stream,
    StreamBatch,
    StreamCopy,
    MpmcProduce,
    MpmcConsume,
    MpmcEcho,
    SpscProduce,
    SpscConsume,
    SpscEcho,
    BcastSubscribe,
    FanoutSubscribe,
    BcastEcho,
    FanoutEcho,
}

pub type BenchError = Box<dyn std::error::Error>;

/// The machine a run measured: CPU model, the CPUs used, the kernel release.
fn machine_json(cpus: (usize, usize)) -> Value {
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".into(), |s| s.trim().to_owned());
    // Other work on a shared machine moves every figure: the 1, 5 and 15 minute load
    // averages when the run began.
    let load: Vec<f64> = std::fs::read_to_string("/proc/loadavg")
        .map(|s| {
            s.split_whitespace()
                .take(3)
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "cpu_model": cpu_model,
        "cpus": [cpus.0, cpus.1],
        "online_cpus": online_cpus(),
        "kernel": kernel,
        "load_average": load,
    })
}

pub fn run(args: BenchArgs) -> Result<(), Failure> {
    let cpus = args.cpus.map_or((0, 1), |CpuPair(a, b)| (a, b));
    if cpus.0.max(cpus.1) >= online_cpus() {
        return Err(Failure::Failed(format!(
            "tally bench pins its processes to two CPUs; this machine has {} (see --cpus)",
            online_cpus()
        )));
    }
    // First: --broadcast with --mpmc is refused as such, not for an --mpmc detail.
    if args.broadcast.is_some() {
        check_broadcast(&args)?;
    }
    if let Some(spec) = args.mpmc {
        check_mpmc(&args, spec)?;
    }
    let target = args.plot.as_deref().map(plot::Target::claim).transpose()?;
    let result = measure(&args, cpus, target.as_ref());
    if let (Err(_), Some(t)) = (&result, target) {
        t.abandon();
    }
    result
}

/// What `--mpmc` refuses (exit 2), before anything is measured.
fn check_mpmc(args: &BenchArgs, spec: mpmc::Spec) -> Result<(), Failure> {
    if matches!(args.which, Some(Which::Sync)) {
        return Err(Failure::Usage(
            "--mpmc applies to latency and throughput, not sync".into(),
        ));
    }
    if args.payload != 8 {
        return Err(Failure::Usage(format!(
            "--mpmc sends {}-byte messages (producer id, sequence number); --payload does not apply",
            mpmc::MSG_BYTES
        )));
    }
    if matches!(args.which, None | Some(Which::Latency)) && !spec.is_one_one() {
        return Err(Failure::Usage(format!(
            "latency takes --mpmc 1,1 only (ping-pong of one producer and one consumer), not {},{}; measure P,C with `tally bench throughput --mpmc {},{}`",
            spec.producers, spec.consumers, spec.producers, spec.consumers
        )));
    }
    Ok(())
}

/// What `--broadcast` refuses (exit 2), before anything is measured.
fn check_broadcast(args: &BenchArgs) -> Result<(), Failure> {
    if args.mpmc.is_some() {
        return Err(Failure::Usage(
            "--broadcast and --mpmc measure different rings; give one of them".into(),
        ));
    }
    match args.which {
        Some(Which::Sync) => {
            return Err(Failure::Usage(
                "--broadcast applies to latency and throughput, not sync".into(),
            ));
        }
        Some(Which::Lifecycle(_)) => {
            return Err(Failure::Usage(
                "--broadcast applies to latency and throughput, not lifecycle".into(),
            ));
        }
        _ => {}
    }
    if args.payload != 8 {
        return Err(Failure::Usage(
            "--broadcast sends 8-byte messages (sequence numbers); --payload does not apply".into(),
        ));
    }
    if args.plot.is_some() {
        return Err(Failure::Usage(
            "--plot does not draw --broadcast runs; use --json".into(),
        ));
    }
    Ok(())
}

/// `--broadcast N`: the broadcast ring and its baselines, into `out`.
fn measure_broadcast(
    args: &BenchArgs,
    n: usize,
    cpus: (usize, usize),
    out: &mut serde_json::Map<String, Value>,
) -> Result<(), Failure> {
    let failed = |e: BenchError| Failure::Failed(e.to_string());
    let do_latency = matches!(args.which, None | Some(Which::Latency));
    let do_throughput = matches!(args.which, None | Some(Which::Throughput));
    let mut progress = Progress::new(
        u32::from(do_latency) * broadcast::LATENCY_STEPS
            + u32::from(do_throughput) * broadcast::THROUGHPUT_STEPS,
        args.quiet,
    );
    if do_latency {
        let report = broadcast::latency(args, n, cpus, &mut progress).map_err(failed)?;
        if !args.json {
            progress.clear();
            broadcast::print_latency(&report, args, cpus);
        }
        out.insert("latency".into(), broadcast::latency_json(&report, args));
    }
    if do_throughput {
        let report = broadcast::throughput(args, n, cpus, &mut progress).map_err(failed)?;
        if !args.json {
            progress.clear();
            broadcast::print_throughput(&report, args);
        }
        out.insert(
            "throughput".into(),
            broadcast::throughput_json(&report, args),
        );
    }
    progress.finish();
    Ok(())
}

/// `--mpmc`: the MPMC ring and its baselines, into `out`.
fn measure_mpmc(
    args: &BenchArgs,
    spec: mpmc::Spec,
    cpus: (usize, usize),
    target: Option<&plot::Target>,
    out: &mut serde_json::Map<String, Value>,
) -> Result<(), Failure> {
    let failed = |e: BenchError| Failure::Failed(e.to_string());
    let do_latency = matches!(args.which, None | Some(Which::Latency));
    let do_throughput = matches!(args.which, None | Some(Which::Throughput));
    let mut progress = Progress::new(
        u32::from(do_latency) * mpmc::LATENCY_STEPS
            + u32::from(do_throughput) * mpmc::THROUGHPUT_STEPS,
        args.quiet,
    );
    let mut lat = None;
    if do_latency {
        let report = mpmc::latency(args, cpus, &mut progress).map_err(failed)?;
        if !args.json {
            progress.clear();
            mpmc::print_latency(&report, args, cpus);
        }
        out.insert("latency".into(), mpmc::latency_json(&report, args));
        lat = Some(report);
    }
    let mut thr = None;
    if do_throughput {
        let report = mpmc::throughput(args, spec, cpus, &mut progress).map_err(failed)?;
        if !args.json {
            progress.clear();
            mpmc::print_throughput(&report, args);
        }
        out.insert("throughput".into(), mpmc::throughput_json(&report, args));
        thr = Some(report);
    }
    progress.finish();
    if let Some(t) = target {
        t.draw_mpmc(lat.as_ref(), thr.as_ref())?;
        if !args.json {
            println!("plot: {}", t.path().display());
        }
    }
    Ok(())
}

fn measure(
    args: &BenchArgs,
    cpus: (usize, usize),
    target: Option<&plot::Target>,
) -> Result<(), Failure> {
    let failed = |e: BenchError| Failure::Failed(e.to_string());
    let other = args.mpmc.is_some() || args.broadcast.is_some();
    let do_latency = !other && matches!(args.which, None | Some(Which::Latency));
    let do_throughput = !other && matches!(args.which, None | Some(Which::Throughput));
    let lifecycle_args = match args.which {
        // Scaled with the run: 100 operations per batch at the default --iters, a few
        // in a quick run (each create also looks for dead builders' debris, P5).
        None if !other => Some(lifecycle::LifecycleArgs {
            ops: (args.iters / 2000).clamp(1, lifecycle::LifecycleArgs::default().ops),
        }),
        Some(Which::Lifecycle(la)) => Some(la),
        _ => None,
    };
    let machine = machine_json(cpus);
    let mut progress = Progress::new(
        u32::from(do_latency) * latency::STEPS + u32::from(do_throughput) * throughput::STEPS,
        args.quiet,
    );
    if !args.json {
        println!(
            "machine: {}, CPUs {},{} of {}, Linux {}; tally {}",
            machine["cpu_model"].as_str().unwrap_or("?"),
            cpus.0,
            cpus.1,
            online_cpus(),
            machine["kernel"].as_str().unwrap_or("?"),
            env!("CARGO_PKG_VERSION")
        );
        println!();
    }
    let mut out = serde_json::Map::new();
    if let Some(spec) = args.mpmc {
        measure_mpmc(args, spec, cpus, target, &mut out)?;
    }
    if let Some(n) = args.broadcast {
        measure_broadcast(args, n, cpus, &mut out)?;
    }
    let mut lat = None;
    if do_latency {
        let report = latency::run(args, cpus, &mut progress).map_err(failed)?;
        if !args.json {
            progress.clear();
            latency::print(&report, args, cpus);
        }
        out.insert("latency".into(), latency::to_json(&report, args));
        lat = Some(report);
    }
    let mut thr = None;
    if do_throughput {
        let report = throughput::run(args, cpus, &mut progress).map_err(failed)?;
        if !args.json {
            progress.clear();
            throughput::print(&report, args, cpus);
        }
        out.insert("throughput".into(), throughput::to_json(&report, args));
        thr = Some(report);
    }
    if let Some(la) = lifecycle_args {
        // Steps of their own ("1/6 lifecycle: ..."), after the others.
        let mut steps = Progress::new(lifecycle::STEPS, args.quiet);
        let report = lifecycle::run(&la, cpus, &mut steps).map_err(failed)?;
        steps.clear();
        if !args.json {
            lifecycle::print(&report);
        }
        out.insert("lifecycle".into(), lifecycle::to_json(&report));
    }
    if !other {
        progress.finish();
    }
    if let (Some(t), false) = (target, other) {
        t.draw(lat.as_ref(), thr.as_ref(), args.payload)?;
        if !args.json {
            println!("plot: {}", t.path().display());
        }
    }
    if matches!(args.which, Some(Which::Sync)) {
        let report = sync::run(args, cpus).map_err(failed)?;
        if !args.json {
            sync::print(&report);
        }
        out.insert("sync".into(), sync::to_json(&report));
    }
    if args.json {
        let mut v = if out.len() == 1 {
            match out.into_iter().next() {
                Some((_, Value::Object(m))) => m,
                _ => serde_json::Map::new(),
            }
        } else {
            out
        };
        v.insert("machine".into(), machine);
        v.insert("tally_version".into(), json!(env!("CARGO_PKG_VERSION")));
        let text = serde_json::to_string_pretty(&Value::Object(v))
            .map_err(|e| Failure::Failed(e.to_string()))?;
        println!("{text}");
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
