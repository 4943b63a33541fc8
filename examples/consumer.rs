//! The receiving half of a two-terminal demo of a typed tally ring.
//!
//! Start the consumer first, then the producer, with the same name:
//!
//! ```text
//! terminal 1:  cargo run --release --example consumer -- NAME
//! terminal 2:  cargo run --release --example producer -- NAME [COUNT]
//! ```
//!
//! Whichever starts first creates the ring `NAME` (4096 slots, in `/dev/shm/tally.NAME`);
//! the other opens it. The consumer receives with the blocking `recv()` until the
//! producer has gone and the ring is drained (`Disconnected`), checks that sequence
//! numbers arrive as 0, 1, 2, ... (counting every missing, repeated or out-of-order
//! one as an error), prints the rate once a second, and ends with
//! `received N messages, M errors, R msgs/s`. It exits with status 1 if there were
//! errors, 2 on a bad command line.
//!
//! Payload type: see the note in `producer.rs`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use tally::{Options, Ring};

/// One message: a sequence number and the producer's `CLOCK_MONOTONIC` send time.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable, tally::Message)]
struct Msg {
    seq: u64,
    sent_ns: u64,
}

const CAPACITY: usize = 4096;
/// Messages between two looks at the clock.
const CLOCK_EVERY: u64 = 4096;

fn usage(error: &str) -> ExitCode {
    if !error.is_empty() {
        eprintln!("consumer: {error}");
    }
    eprintln!("usage: cargo run --release --example consumer -- NAME");
    eprintln!("  NAME   ring name: ASCII letters, digits, '.', '_' or '-', not starting with '.'");
    ExitCode::from(2)
}

/// Nanoseconds of `CLOCK_MONOTONIC`, comparable between processes on one machine.
fn now_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
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
    if args.iter().any(|a| a == "-h" || a == "--help") {
        usage("");
        return ExitCode::SUCCESS;
    }
    let name = match args.as_slice() {
        [name] => name.as_str(),
        [] => return usage("missing NAME"),
        _ => return usage("too many arguments"),
    };

    let ring = match Ring::<Msg>::open_or_create(name, CAPACITY, &Options::default()) {
        Ok((ring, created)) => {
            let how = if created { "created" } else { "opened" };
            eprintln!("consumer: {how} ring {name:?} ({} slots)", ring.capacity());
            ring
        }
        Err(e @ tally::Error::InvalidName { .. }) => return usage(&e.to_string()),
        Err(e) => {
            eprintln!("consumer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut rx = match ring.consumer() {
        Ok(rx) => rx,
        Err(e) => {
            eprintln!("consumer: {e}");
            return ExitCode::FAILURE;
        }
    };
    eprintln!(
        "consumer: waiting for messages; run: cargo run --release --example producer -- {name}"
    );

    let mut received = 0u64;
    let mut errors = 0u64;
    let mut expected = 0u64;
    // Timing starts at the first message, so waiting for the producer does not count.
    let mut first: Option<Instant> = None;
    let mut tick = Instant::now();
    let mut tick_count = 0u64;
    // `recv` fails only once the producer has gone and everything was read.
    while let Ok(msg) = rx.recv() {
        if msg.seq == expected {
            expected += 1;
        } else if msg.seq > expected {
            // A gap: every skipped sequence number is an error.
            errors += msg.seq - expected;
            expected = msg.seq + 1;
        } else {
            // A duplicate, or one arriving after a later one.
            errors += 1;
        }
        received += 1;
        if first.is_none() {
            tick = Instant::now();
            first = Some(tick);
        }
        if received.is_multiple_of(CLOCK_EVERY) {
            let now = Instant::now();
            let dt = now.duration_since(tick);
            if dt >= Duration::from_secs(1) {
                let rate = (received - tick_count) as f64 / dt.as_secs_f64();
                let age_us = now_ns().saturating_sub(msg.sent_ns) as f64 / 1e3;
                println!(
                    "{rate:>14.0} msgs/s   total {received}, errors {errors}, last message {age_us:.1} us old"
                );
                tick = now;
                tick_count = received;
            }
        }
    }

    let secs = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    let rate = if secs > 0.0 {
        received as f64 / secs
    } else {
        0.0
    };
    println!("received {received} messages, {errors} errors, {rate:.0} msgs/s");
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
