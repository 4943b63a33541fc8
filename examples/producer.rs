//! The sending half of a two-terminal demo of a typed tally ring.
//!
//! Start the consumer first, then the producer, with the same name:
//!
//! ```text
//! terminal 1:  cargo run --release --example consumer -- NAME
//! terminal 2:  cargo run --release --example producer -- NAME [COUNT]
//! ```
//!
//! Whichever starts first creates the ring `NAME` (4096 slots, in `/dev/shm/tally.NAME`);
//! the other opens it. The producer writes COUNT (default 10 000 000) sequence-numbered
//! messages in place with `reserve_wait()`/`commit()` — zero-copy, and waiting (spin,
//! then futex sleep) while the ring is full — and exits; dropping its producer handle
//! tells the consumer that no more messages will come. The last process to leave
//! removes the ring.
//!
//! Payload type: the ring checks that both sides agree on `Msg` by its size, alignment
//! and name without module path, so the producer's and the consumer's own `Msg`
//! definitions match.

use std::process::ExitCode;

use tally::{Options, Ring};

/// One message: a sequence number and the producer's `CLOCK_MONOTONIC` send time.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable, tally::Message)]
struct Msg {
    seq: u64,
    sent_ns: u64,
}

const CAPACITY: usize = 4096;
const DEFAULT_COUNT: u64 = 10_000_000;

fn usage(error: &str) -> ExitCode {
    if !error.is_empty() {
        eprintln!("producer: {error}");
    }
    eprintln!("usage: cargo run --release --example producer -- NAME [COUNT]");
    eprintln!("  NAME   ring name: ASCII letters, digits, '.', '_' or '-', not starting with '.'");
    eprintln!("  COUNT  messages to send (default {DEFAULT_COUNT})");
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
    let (name, count) = match args.as_slice() {
        [name] => (name.as_str(), DEFAULT_COUNT),
        [name, count] => match count.replace('_', "").parse::<u64>() {
            Ok(n) => (name.as_str(), n),
            Err(_) => return usage(&format!("COUNT must be a whole number, not {count:?}")),
        },
        [] => return usage("missing NAME"),
        _ => return usage("too many arguments"),
    };

    let ring = match Ring::<Msg>::open_or_create(name, CAPACITY, &Options::default()) {
        Ok((ring, created)) => {
            let how = if created { "created" } else { "opened" };
            eprintln!("producer: {how} ring {name:?} ({} slots)", ring.capacity());
            ring
        }
        Err(e @ tally::Error::InvalidName { .. }) => return usage(&e.to_string()),
        Err(e) => {
            eprintln!("producer: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut tx = match ring.producer() {
        Ok(tx) => tx,
        Err(e) => {
            eprintln!("producer: {e}");
            return ExitCode::FAILURE;
        }
    };

    let start = std::time::Instant::now();
    let mut seq = 0u64;
    while seq < count {
        match tx.reserve_wait() {
            Ok(mut slot) => {
                // Zero-copy: write the message straight into the shared slot, then publish.
                slot.seq = seq;
                slot.sent_ns = now_ns();
                slot.commit();
            }
            Err(e) => {
                eprintln!("producer: {e} after {seq} messages");
                return ExitCode::FAILURE;
            }
        }
        seq += 1;
    }
    let secs = start.elapsed().as_secs_f64();

    // A ring lives while someone holds it. If no consumer ever attached, leaving now
    // would take the unread messages with it: wait for one, then until they are taken.
    tx.wait_for_consumer(std::time::Duration::MAX);
    while tx.free_slots() < ring.capacity() && !tx.is_disconnected() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    drop(tx); // the consumer sees `Disconnected` once it has drained the ring
    eprintln!(
        "producer: sent {count} messages in {secs:.3} s ({:.0} msgs/s)",
        count as f64 / secs.max(1e-9)
    );
    ExitCode::SUCCESS
}
