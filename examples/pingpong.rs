//! Round-trip latency between two processes over two tally rings, in one command:
//!
//! ```text
//! cargo run --release --example pingpong            # 100 000 round trips
//! cargo run --release --example pingpong -- 1000000 # or as many as you like
//! ```
//!
//! The parent creates the rings `pingpong-PID.ping` and `pingpong-PID.pong` (each a
//! `Ring<u64>`), starts itself again as the echo peer (`pingpong --peer pingpong-PID`),
//! and then, one at a time, sends a number on `ping` and spins until the peer has sent
//! it back on `pong`. It prints the one-way latency, half of each round trip, as p50,
//! p99 and mean (plus min and max). Both sides spin, so the figures are best on a
//! machine with two idle cores; neither process is pinned to a CPU here (see
//! `tally bench latency` for pinned measurements and comparisons).
//!
//! Exit status: 0 on success, 1 if the peer fails, 2 on a bad command line.

use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use tally::{Consumer, Producer, Ring, TryRecvError};

const DEFAULT_ROUND_TRIPS: usize = 100_000;
const WARMUP: usize = 10_000;
const CAPACITY: usize = 64;
/// How long to wait for an echo before giving up on the peer (the first one includes
/// the peer's start-up).
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

type BoxError = Box<dyn std::error::Error>;

fn usage(error: &str) -> ExitCode {
    if !error.is_empty() {
        eprintln!("pingpong: {error}");
    }
    eprintln!("usage: cargo run --release --example pingpong -- [ROUND_TRIPS]");
    eprintln!("  ROUND_TRIPS  round trips to measure (default {DEFAULT_ROUND_TRIPS})");
    ExitCode::from(2)
}

fn ring_names(base: &str) -> (String, String) {
    (format!("{base}.ping"), format!("{base}.pong"))
}

fn main() -> ExitCode {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect()
    {
        Ok(args) => args,
        Err(bad) => return usage(&format!("argument {bad:?} is not valid UTF-8")),
    };
    let n = match args.as_slice() {
        [flag, base] if flag == "--peer" => {
            return match peer(base) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pingpong peer: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        [flag, ..] if flag == "-h" || flag == "--help" => {
            usage("");
            return ExitCode::SUCCESS;
        }
        [] => DEFAULT_ROUND_TRIPS,
        [n] => match n.replace('_', "").parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => return usage(&format!("ROUND_TRIPS must be a positive number, not {n:?}")),
        },
        _ => return usage("too many arguments"),
    };
    match parent(n) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pingpong: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The echo peer: sends back every number it receives until the parent goes.
fn peer(base: &str) -> Result<(), BoxError> {
    let (ping_name, pong_name) = ring_names(base);
    let ping = Ring::<u64>::open(&ping_name)?;
    let pong = Ring::<u64>::open(&pong_name)?;
    let mut rx = ping.consumer()?;
    let mut tx = pong.producer()?;
    loop {
        match rx.recv() {
            Ok(v) => tx.send(v).map_err(|_| "the parent went away")?,
            Err(tally::RecvError) => return Ok(()),
        }
    }
}

fn parent(n: usize) -> Result<(), BoxError> {
    let base = format!("pingpong-{}", std::process::id());
    let (ping_name, pong_name) = ring_names(&base);
    let ping = Ring::<u64>::create(&ping_name, CAPACITY)?;
    let pong = Ring::<u64>::create(&pong_name, CAPACITY)?;
    let mut tx = ping.producer()?;
    let mut rx = pong.consumer()?;

    let mut child = Command::new(std::env::current_exe()?)
        .arg("--peer")
        .arg(&base)
        .spawn()?;
    let result = measure(&mut tx, &mut rx, &mut child, n);

    // Dropping the producer ends the peer's `recv` loop.
    drop(tx);
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let rtts = result?;
    if !status.success() {
        return Err(format!("the peer exited with {status}").into());
    }
    report(&base, rtts);
    Ok(())
}

/// Runs the warm-up and then `n` timed round trips; returns each round trip in ns.
fn measure(
    tx: &mut Producer<u64>,
    rx: &mut Consumer<u64>,
    child: &mut Child,
    n: usize,
) -> Result<Vec<u64>, BoxError> {
    let mut value = 0u64;
    for _ in 0..WARMUP {
        round_trip(tx, rx, child, value)?;
        value += 1;
    }
    let mut rtts = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = Instant::now();
        round_trip(tx, rx, child, value)?;
        rtts.push(t0.elapsed().as_nanos() as u64);
        value += 1;
    }
    Ok(rtts)
}

/// Sends `value` and spins until it comes back.
#[inline]
fn round_trip(
    tx: &mut Producer<u64>,
    rx: &mut Consumer<u64>,
    child: &mut Child,
    value: u64,
) -> Result<(), BoxError> {
    // At most one message is ever in flight, so the ring has room.
    tx.try_send(value)
        .map_err(|e| format!("sending to the peer: {e}"))?;
    let mut spins = 0u32;
    let mut waiting_since: Option<Instant> = None;
    loop {
        match rx.try_recv() {
            Ok(echo) if echo == value => return Ok(()),
            Ok(echo) => return Err(format!("sent {value}, the peer echoed {echo}").into()),
            Err(TryRecvError::Disconnected) => return Err("the peer went away".into()),
            Err(TryRecvError::Empty) => {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                // Look at the clock rarely: it is not free, and this is the timed path.
                if spins.is_multiple_of(1 << 16) {
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    if let Some(status) = child.try_wait()? {
                        return Err(format!("the peer exited with {status}").into());
                    }
                    if since.elapsed() > PEER_TIMEOUT {
                        return Err(format!("no echo from the peer in {PEER_TIMEOUT:?}").into());
                    }
                }
            }
        }
    }
}

/// Prints one-way latency (half of each round trip) percentiles.
fn report(base: &str, mut rtts: Vec<u64>) {
    rtts.sort_unstable();
    let n = rtts.len();
    // Nearest-rank percentile of the sorted round trips, halved.
    let one_way = |p: usize| {
        let rank = (n * p).div_ceil(100).clamp(1, n);
        rtts[rank - 1] as f64 / 2.0
    };
    let mean = rtts.iter().map(|&r| r as f64).sum::<f64>() / n as f64 / 2.0;
    println!("{n} round trips over {base}.ping / {base}.pong (Ring<u64>, one message in flight)");
    println!(
        "one-way latency (RTT/2): p50 {:.0} ns, p99 {:.0} ns, mean {mean:.0} ns (min {:.0} ns, max {:.0} ns)",
        one_way(50),
        one_way(99),
        rtts[0] as f64 / 2.0,
        rtts[n - 1] as f64 / 2.0,
    );
}
