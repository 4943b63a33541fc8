//! The other process of every measurement: `tally bench-peer --mode M ...`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use tally::{ByteRing, Region, ReserveError, Ring};

use super::latency::{TWO_LINE_PING, TWO_LINE_PONG};
use super::{
    BenchError, Mode, broadcast, fill_payload, mpmc, new_histogram, read_payload, summary,
};

#[derive(Args, Clone, Debug)]
pub struct PeerArgs {
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long)]
    name: String,
    #[arg(long)]
    name2: Option<String>,
    #[arg(long)]
    path: Option<String>,
    #[arg(long)]
    payload: usize,
    #[arg(long)]
    cpu: usize,
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// `--mpmc` producers: this one's id.
    #[arg(long, default_value_t = 0)]
    id: u64,
    /// `--mpmc` consumers: how many producers there are.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// `--broadcast`: whether processes of the run share a CPU (then waits yield).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    share_cpu: bool,
}

pub(super) fn ready() -> Result<(), BenchError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    Ok(())
}

pub fn run(a: PeerArgs) -> Result<(), BenchError> {
    tally::__private::pin_to_cpu(a.cpu)?;
    match a.mode {
        Mode::Floor => {
            let region = Region::open(&a.name)?;
            // SAFETY: see the parent in latency.rs: an aligned u64 in a live region.
            let word = unsafe { &*(region.as_ptr() as *const AtomicU64) };
            ready()?;
            let mut expect = 1u64;
            loop {
                let v = word.load(Ordering::Acquire);
                if v == u64::MAX {
                    break;
                }
                if v == expect {
                    word.store(expect + 1, Ordering::Release);
                    expect += 2;
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        Mode::TwoLine => {
            let region = Region::open(&a.name)?;
            // SAFETY: see `two_line` in latency.rs: two aligned u64s, 128 bytes apart,
            // in a live region of 256 bytes.
            let (ping, pong) = unsafe {
                (
                    &*(region.as_ptr().add(TWO_LINE_PING) as *const AtomicU64),
                    &*(region.as_ptr().add(TWO_LINE_PONG) as *const AtomicU64),
                )
            };
            ready()?;
            let mut expect = 1u64;
            loop {
                // SYNC POINT: pairs with the parent's Release store of ping.
                let v = ping.load(Ordering::Acquire);
                if v == u64::MAX {
                    break;
                }
                if v == expect {
                    // SYNC POINT: pairs with the parent's Acquire load of pong.
                    pong.store(expect, Ordering::Release);
                    expect += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        }
        Mode::Tally => {
            let ping = ByteRing::open(&a.name)?;
            let pong = ByteRing::open(a.name2.as_deref().ok_or("--name2")?)?;
            let mut rx = ping.consumer()?;
            let mut tx = pong.producer()?;
            ready()?;
            loop {
                let Ok(msg) = rx.peek() else {
                    std::hint::spin_loop();
                    continue;
                };
                if msg.is_empty() {
                    break;
                }
                let mut reply = loop {
                    match tx.reserve(msg.len()) {
                        Ok(slot) => break slot,
                        Err(_) => std::hint::spin_loop(),
                    }
                };
                // Reads the whole request and writes the whole reply, in place.
                reply.copy_from_slice(&msg);
                reply.commit();
                msg.release();
            }
        }
        Mode::TallyU64 => {
            let ping = Ring::<u64>::open(&a.name)?;
            let pong = Ring::<u64>::open(a.name2.as_deref().ok_or("--name2")?)?;
            let mut rx = ping.consumer()?;
            let mut tx = pong.producer()?;
            ready()?;
            loop {
                let Ok(msg) = rx.peek() else {
                    std::hint::spin_loop();
                    continue;
                };
                let value = *msg;
                if value == u64::MAX {
                    break;
                }
                let mut reply = loop {
                    match tx.reserve() {
                        Ok(slot) => break slot,
                        Err(_) => std::hint::spin_loop(),
                    }
                };
                *reply = value;
                reply.commit();
                msg.release();
            }
        }
        Mode::Pipe => {
            ready()?;
            let mut input = std::io::stdin().lock();
            let mut output = std::io::stdout().lock();
            let mut buf = vec![0u8; a.payload];
            while input.read_exact(&mut buf).is_ok() {
                output.write_all(&buf)?;
                output.flush()?;
            }
        }
        Mode::Uds => {
            let mut stream = UnixStream::connect(a.path.as_deref().ok_or("--path")?)?;
            ready()?;
            let mut buf = vec![0u8; a.payload];
            while stream.read_exact(&mut buf).is_ok() {
                stream.write_all(&buf)?;
            }
        }
        Mode::TallyWake => {
            let ring = ByteRing::open(&a.name)?;
            let mut rx = ring.consumer()?;
            ready()?;
            let mut h = new_histogram();
            let mut buf = Vec::new();
            while rx.recv_into(&mut buf).is_ok() && buf.len() == 8 {
                let now = tally::__private::monotonic_ns();
                let sent = u64::from_le_bytes(buf[..8].try_into()?);
                h.record(now.saturating_sub(sent).max(1))?;
            }
            println!("{}", summary(&h));
        }
        Mode::FutexWake => {
            let region = Region::open(&a.name)?;
            // SAFETY: see the parent in latency.rs.
            let (word, stamp) = unsafe {
                (
                    &*(region.as_ptr() as *const AtomicU32),
                    &*(region.as_ptr().add(8) as *const AtomicU64),
                )
            };
            let mut seen = word.load(Ordering::Acquire);
            ready()?;
            let mut h = new_histogram();
            loop {
                while word.load(Ordering::Acquire) == seen {
                    tally::__private::futex_wait(word, seen, None);
                }
                let now = tally::__private::monotonic_ns();
                seen = word.load(Ordering::Acquire);
                let sent = stamp.load(Ordering::Relaxed);
                if sent == u64::MAX {
                    break;
                }
                h.record(now.saturating_sub(sent).max(1))?;
            }
            println!("{}", summary(&h));
        }
        Mode::Stream | Mode::StreamBatch | Mode::StreamCopy => stream(&a)?,
        Mode::MpmcProduce | Mode::SpscProduce => {
            mpmc::peer_produce(a.mode, &a.name, a.id, a.seconds)?;
        }
        Mode::MpmcConsume | Mode::SpscConsume => {
            mpmc::peer_consume(a.mode, &a.name, a.producers)?;
        }
        Mode::MpmcEcho | Mode::SpscEcho => {
            mpmc::peer_echo(a.mode, &a.name, a.name2.as_deref().ok_or("--name2")?)?;
        }
        Mode::BcastSubscribe | Mode::FanoutSubscribe => {
            broadcast::peer_subscribe(a.mode, &a.name, a.share_cpu)?;
        }
        Mode::BcastEcho | Mode::FanoutEcho => {
            broadcast::peer_echo(
                a.mode,
                &a.name,
                a.name2.as_deref().ok_or("--name2")?,
                a.share_cpu,
            )?;
        }
    }
    Ok(())
}

/// The producer of a throughput run: sends sequence-numbered payloads for `seconds`,
/// then drops the producer so the consumer sees `Disconnected`.
fn stream(a: &PeerArgs) -> Result<(), BenchError> {
    if a.payload == 8 {
        return stream_u64(a);
    }
    let ring = ByteRing::open(&a.name)?;
    let mut tx = ring.producer()?;
    ready()?;
    let end = Instant::now() + Duration::from_secs_f64(a.seconds);
    let mut seq = 0u64;
    let mut local = vec![0u8; a.payload];
    'outer: loop {
        for _ in 0..64 {
            match a.mode {
                Mode::StreamBatch => match tx.reserve_many(a.batch, a.payload) {
                    Ok(mut batch) => {
                        for i in 0..batch.len() {
                            fill_payload(batch.slot(i), seq);
                            seq += 1;
                        }
                        batch.commit();
                    }
                    Err(ReserveError::Full) => std::hint::spin_loop(),
                    Err(_) => break 'outer,
                },
                Mode::StreamCopy => {
                    fill_payload(&mut local, seq);
                    match tx.try_send(&local) {
                        Ok(()) => seq += 1,
                        Err(ReserveError::Full) => std::hint::spin_loop(),
                        Err(_) => break 'outer,
                    }
                }
                _ => match tx.reserve(a.payload) {
                    Ok(mut slot) => {
                        fill_payload(&mut slot, seq);
                        slot.commit();
                        seq += 1;
                    }
                    Err(ReserveError::Full) => std::hint::spin_loop(),
                    Err(_) => break 'outer,
                },
            }
        }
        if Instant::now() >= end {
            break;
        }
    }
    // Keep the checksum honest: nothing here is optimised away.
    std::hint::black_box(read_payload(&local));
    Ok(())
}

/// The producer of an 8-byte stream: a typed `Ring<u64>` whose value is the sequence
/// number (the whole payload).
fn stream_u64(a: &PeerArgs) -> Result<(), BenchError> {
    let ring = Ring::<u64>::open(&a.name)?;
    let mut tx = ring.producer()?;
    ready()?;
    let end = Instant::now() + Duration::from_secs_f64(a.seconds);
    let mut seq = 0u64;
    'outer: loop {
        for _ in 0..64 {
            let sent = match a.mode {
                Mode::StreamBatch => tx.reserve_many(a.batch).map(|mut batch| {
                    let n = batch.len() as u64;
                    batch.fill_with(|i| seq + i as u64);
                    batch.commit();
                    n
                }),
                Mode::StreamCopy => tx.try_send(seq).map(|()| 1).map_err(|e| match e {
                    tally::TrySendError::Full(_) => ReserveError::Full,
                    tally::TrySendError::Disconnected(_) => ReserveError::Disconnected,
                }),
                _ => tx.reserve().map(|mut slot| {
                    *slot = seq;
                    slot.commit();
                    1
                }),
            };
            match sent {
                Ok(n) => seq += n,
                Err(ReserveError::Full) => std::hint::spin_loop(),
                Err(_) => break 'outer,
            }
        }
        if Instant::now() >= end {
            break;
        }
    }
    Ok(())
}
