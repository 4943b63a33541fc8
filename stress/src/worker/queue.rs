//! Producers and consumers of the MPMC ring and the SPSC rings.

use std::time::Duration;

use tally::{
    ByteConsumer, ByteProducer, ByteRing, MpmcByteConsumer, MpmcByteProducer, MpmcByteRing,
    RecvTimeoutError, ReserveTimeoutError,
};

use super::{Ctx, Plant, Role, stopping};
use crate::stats::slot;
use crate::wire::{self, HEADER, Log, Record};

/// How long one wait lasts before the worker looks at its stop flag again.
const POLL: Duration = Duration::from_millis(50);

/// The message a planted consumer fault is made on.
const PLANT_AT: u64 = 20;

enum Sent {
    Yes,
    NotNow,
}

enum Got {
    Yes,
    NotNow,
    Disconnected,
}

/// The sending side of either ring.
trait Tx {
    fn send_with(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<Sent, String>;
}

/// The receiving side of either ring: `f` sees the message while it is held.
trait Rx {
    fn recv_with(&mut self, f: &mut dyn FnMut(&[u8]) -> std::io::Result<()>)
    -> Result<Got, String>;
}

fn sent(r: Result<(), ReserveTimeoutError>) -> Result<Sent, String> {
    match r {
        Ok(()) => Ok(Sent::Yes),
        Err(ReserveTimeoutError::Timeout | ReserveTimeoutError::Disconnected) => Ok(Sent::NotNow),
        Err(e) => Err(e.to_string()),
    }
}

impl Tx for MpmcByteProducer {
    fn send_with(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<Sent, String> {
        sent(self.reserve_timeout(len, POLL).map(|mut slot| {
            fill(&mut slot);
            slot.commit();
        }))
    }
}

impl Tx for ByteProducer {
    fn send_with(&mut self, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> Result<Sent, String> {
        sent(self.reserve_timeout(len, POLL).map(|mut slot| {
            fill(&mut slot);
            slot.commit();
        }))
    }
}

fn got(r: Result<std::io::Result<()>, RecvTimeoutError>) -> Result<Got, String> {
    match r {
        Ok(Ok(())) => Ok(Got::Yes),
        Ok(Err(e)) => Err(format!("cannot write the log: {e}")),
        Err(RecvTimeoutError::Timeout) => Ok(Got::NotNow),
        Err(RecvTimeoutError::Disconnected) => Ok(Got::Disconnected),
    }
}

impl Rx for MpmcByteConsumer {
    fn recv_with(
        &mut self,
        f: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<Got, String> {
        got(self.peek_timeout(POLL).map(|slot| {
            let r = f(&slot);
            if r.is_ok() {
                slot.release();
            }
            r
        }))
    }
}

impl Rx for ByteConsumer {
    fn recv_with(
        &mut self,
        f: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<Got, String> {
        got(self.peek_timeout(POLL).map(|slot| {
            let r = f(&slot);
            if r.is_ok() {
                slot.release();
            }
            r
        }))
    }
}

/// Sends messages 0, 1, 2, ... until told to stop; stores the count after each commit.
pub fn produce(ctx: &mut Ctx) -> Result<(), String> {
    let id = ctx.args.id;
    let max = ctx.args.payload;
    let torn_at = (ctx.args.plant == Some(Plant::Torn)).then_some(PLANT_AT as u32);
    let (_mpmc, _spsc, mut tx): (_, _, Box<dyn Tx>) = if ctx.args.role == Role::MpmcProducer {
        let ring = MpmcByteRing::open(&ctx.names.mpmc()).map_err(|e| e.to_string())?;
        let tx = ring.producer().map_err(|e| e.to_string())?;
        (Some(ring), None, Box::new(tx))
    } else {
        let ring = ByteRing::open(&ctx.names.spsc(ctx.args.pair)).map_err(|e| e.to_string())?;
        let tx = claim_role(|| ring.producer())?;
        (None, Some(ring), Box::new(tx))
    };
    let mut seq: u32 = 0;
    while !stopping() {
        let len = HEADER + wire::payload_len(id, seq, max);
        let mut fill = |buf: &mut [u8]| wire::encode(buf, id, seq, torn_at == Some(seq));
        match tx.send_with(len, &mut fill)? {
            Sent::Yes => {
                seq += 1;
                ctx.stats.set(slot::PROGRESS, u64::from(seq));
            }
            Sent::NotNow => {}
        }
    }
    Ok(())
}

/// Claims an SPSC role, waiting while the previous holder's claim is being reclaimed.
fn claim_role<H>(mut claim: impl FnMut() -> tally::Result<H>) -> Result<H, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match claim() {
            Ok(h) => return Ok(h),
            Err(tally::Error::RoleTaken { .. }) if std::time::Instant::now() < deadline => {
                if stopping() {
                    return Err("stopped before the role came free".into());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// What a planted consumer does to its log.
struct Planter {
    plant: Option<Plant>,
    received: u64,
    /// Reordered: a record held back until its producer's next one.
    held: Option<Record>,
}

impl Planter {
    fn log(&mut self, log: &mut Log, rec: Record) -> std::io::Result<()> {
        self.received += 1;
        if let Some(h) = self.held
            && h.producer == rec.producer
        {
            self.held = None;
            log.append(rec)?;
            return log.append(h);
        }
        if self.received == PLANT_AT {
            match self.plant {
                Some(Plant::Lost) => return Ok(()),
                Some(Plant::Duplicated) => log.append(rec)?,
                Some(Plant::Reordered) => {
                    self.held = Some(rec);
                    return Ok(());
                }
                _ => {}
            }
        }
        log.append(rec)
    }
}

/// Receives until told to stop and the ring is drained; logs each message before
/// releasing it.
pub fn consume(ctx: &mut Ctx) -> Result<(), String> {
    let path = ctx.args.dir.join(format!("w{}.log", ctx.args.id));
    let mut log = Log::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (_mpmc, _spsc, mut rx): (_, _, Box<dyn Rx>) = if ctx.args.role == Role::MpmcConsumer {
        let ring = MpmcByteRing::open(&ctx.names.mpmc()).map_err(|e| e.to_string())?;
        let rx = ring.consumer().map_err(|e| e.to_string())?;
        (Some(ring), None, Box::new(rx))
    } else {
        let ring = ByteRing::open(&ctx.names.spsc(ctx.args.pair)).map_err(|e| e.to_string())?;
        let rx = claim_role(|| ring.consumer())?;
        (None, Some(ring), Box::new(rx))
    };
    let mut planter = Planter {
        plant: ctx.args.plant,
        received: 0,
        held: None,
    };
    let mut received = 0u64;
    loop {
        let mut on_msg = |msg: &[u8]| planter.log(&mut log, Record::of_message(msg));
        match rx.recv_with(&mut on_msg)? {
            Got::Yes => {
                received += 1;
                ctx.stats.set(slot::PROGRESS, received);
            }
            // Every producer has gone and everything committed was received: done if
            // the runner is stopping the run (it stops producers first), otherwise a
            // replacement producer is on its way.
            Got::Disconnected if stopping() => return Ok(()),
            Got::Disconnected => std::thread::sleep(Duration::from_millis(1)),
            Got::NotNow => {}
        }
    }
}
