//! `--subscribers S`: a publisher and S subscriber seats on a lossless byte broadcast
//! ring ([`tally::ByteBroadcast`], [`Policy::Lossless`]).
//!
//! - The publisher sends the same checksummed messages as a producer
//!   ([`crate::wire::encode`]), with the message's ring position as its sequence number,
//!   and stores the ring's committed count after each commit (and, first, the position
//!   it started at). A publisher killed mid-commit is replaced; its successor continues
//!   the ring's sequence.
//! - Each subscriber joins at [`Start::Oldest`], stores the position it joined at, and
//!   appends a [`crate::wire::Record`] per message to its log before it releases the
//!   message. A killed subscriber is replaced by a new process on the same seat.
//!
//! What the ring guarantees, and so what [`check`] demands, per subscriber *process*:
//! every message committed from the position it joined at, exactly once, in order,
//! intact, each from the publisher that committed that position; a subscriber that
//! stopped cleanly (after the publisher did) has every message up to the ring's final
//! tail. Across a seat's successive processes nothing is promised: a replacement joins
//! where the slowest live subscriber is, which may be before its predecessor's last
//! message (received again) or after it (what the seat missed while it was vacant,
//! already read by every live subscriber and overwritten). Both are counted and
//! reported, never failures.

use std::time::Duration;

use tally::{BroadcastRecvTimeoutError, ByteBroadcast, Policy, ReserveTimeoutError, Start};

use crate::check::Verdict;
use crate::stats::slot;
use crate::wire::{self, HEADER, Log, Record};
use crate::worker::{Ctx, Plant, stopping};

/// How long one wait lasts before the worker looks at its stop flag again.
const POLL: Duration = Duration::from_millis(50);

/// The message a planted fault is made on.
const PLANT_AT: u64 = 20;

/// Creates the run's broadcast ring (lossless; `opts.holders` bounds the subscribers).
///
/// # Errors
/// The library's error, in words.
pub fn create(
    name: &str,
    capacity: usize,
    max_message: usize,
    opts: &tally::Options,
) -> Result<ByteBroadcast, String> {
    ByteBroadcast::create_with(name, capacity, max_message, Policy::Lossless, opts)
        .map_err(|e| format!("create the broadcast ring: {e}"))
}

/// Claims the publisher role, waiting while the previous holder's claim is reclaimed.
fn claim_publisher(ring: &ByteBroadcast) -> Result<tally::BytePublisher, String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match ring.publisher() {
            Ok(h) => return Ok(h),
            Err(tally::Error::RoleTaken { .. }) if std::time::Instant::now() < deadline => {
                if stopping() {
                    return Err("stopped before the publisher role came free".into());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// The publisher: sends the message for ring position p as (its id, p) until told to
/// stop; stores the ring's committed count after each commit.
pub fn publish(ctx: &mut Ctx) -> Result<(), String> {
    let id = ctx.args.id;
    let max = ctx.args.payload;
    let ring = ByteBroadcast::open(&ctx.names.broadcast()).map_err(|e| e.to_string())?;
    let mut tx = claim_publisher(&ring)?;
    let base = tx.position();
    // The first publisher waits for every seat's first subscriber, so that they all
    // see the stream from its start (a successor does not: seats may be vacant).
    if base == 0 {
        let seats = ctx.args.subscribers as usize;
        while !stopping() && !tx.wait_for_subscribers(seats, POLL) {}
    }
    ctx.stats.set(slot::BASE, base);
    ctx.stats.set(slot::PROGRESS, base);
    ctx.stats.set(slot::JOINED, 1);
    let torn_at = (ctx.args.plant == Some(Plant::BroadcastTorn)).then_some(PLANT_AT);
    while !stopping() {
        let pos = tx.position();
        let seq = u32::try_from(pos).map_err(|_| "ring position past u32".to_string())?;
        let len = HEADER + wire::payload_len(id, seq, max);
        match tx.reserve_timeout(len, POLL) {
            Ok(mut slot) => {
                wire::encode(&mut slot, id, seq, torn_at == Some(pos - base));
                slot.commit();
                ctx.stats.set(slot::PROGRESS, pos + 1);
            }
            Err(ReserveTimeoutError::Timeout) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

/// A subscriber: joins at the oldest message, stores where, and logs each message
/// before releasing it, until told to stop and the publisher has gone and everything
/// was read.
pub fn subscribe(ctx: &mut Ctx) -> Result<(), String> {
    let path = ctx.args.dir.join(format!("w{}.log", ctx.args.id));
    let mut log = Log::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let ring = ByteBroadcast::open(&ctx.names.broadcast()).map_err(|e| e.to_string())?;
    let mut rx = ring.subscribe(Start::Oldest).map_err(|e| e.to_string())?;
    ctx.stats.set(slot::BASE, rx.position());
    ctx.stats.set(slot::JOINED, 1);
    let plant = ctx.args.plant;
    let mut received = 0u64;
    loop {
        match rx.peek_timeout(POLL) {
            Ok(msg) => {
                let rec = Record::of_message(&msg);
                received += 1;
                let skip = plant == Some(Plant::BroadcastLost) && received == PLANT_AT;
                if !skip {
                    log.append(rec)
                        .map_err(|e| format!("cannot write the log: {e}"))?;
                }
                msg.release()
                    .map_err(|l| format!("a lossless ring reported {l:?} on release"))?;
                ctx.stats.set(slot::PROGRESS, received);
            }
            Err(BroadcastRecvTimeoutError::Timeout) => {}
            // The publisher has gone and everything it committed was read: done if the
            // runner is stopping the run (it stops the publisher first), otherwise a
            // replacement publisher is on its way.
            Err(BroadcastRecvTimeoutError::Disconnected) if stopping() => return Ok(()),
            Err(BroadcastRecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e @ BroadcastRecvTimeoutError::Lagged(_)) => {
                return Err(format!("a lossless ring reported {e}"));
            }
        }
    }
}

/// What a publisher process left behind.
#[derive(Clone, Copy, Debug, Default)]
pub struct PublisherEnd {
    /// Its worker id (the producer id its messages carry).
    pub id: u32,
    /// Whether it claimed the role and stored where it started.
    pub joined: bool,
    /// The ring position of its first message.
    pub base: u64,
    /// The ring's committed count when it last stored it.
    pub committed: u64,
    /// Whether it stopped when told to (else it may have committed one more).
    pub clean: bool,
}

/// What a subscriber process left behind.
#[derive(Clone, Debug, Default)]
pub struct SubscriberEnd {
    /// Whether it subscribed and stored its join position.
    pub joined: bool,
    /// The position it joined at.
    pub base: u64,
    /// What it logged, in order.
    pub records: Vec<Record>,
    /// Whether it stopped when told to (and so must have read up to the final tail).
    pub clean: bool,
}

/// The broadcast check's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BroadcastVerdict {
    /// The message checks: `committed` is the ring's final tail, `delivered` every
    /// record of every subscriber; lost, duplicated, reordered, torn and phantom per
    /// subscriber process from its join position.
    pub verdict: Verdict,
    /// Breaks in the publishers' sequence: a successor that did not start where its
    /// predecessor's commits ended, or a last publisher that disagrees with the tail.
    pub sequence_breaks: u64,
    /// Messages a replacement subscriber received again, that its seat's killed
    /// predecessor had logged (it joined before them): expected, not a failure.
    pub rejoin_redelivered: u64,
    /// Messages a seat missed while vacant (its replacement joined after them): the
    /// ring promises nothing to a subscriber that is not there; not a failure.
    pub rejoin_missed: u64,
    /// Subscriber processes that joined.
    pub joins: u64,
}

impl BroadcastVerdict {
    /// Whether nothing failed.
    pub fn passed(&self) -> bool {
        self.verdict.passed() && self.sequence_breaks == 0
    }
}

/// Checks the broadcast ring: `publishers` in the order they ran (worker id order),
/// `seats` each a seat's processes in order, `tail` the ring's committed count at the
/// end (every worker gone).
pub fn check(
    publishers: &[PublisherEnd],
    seats: &[Vec<SubscriberEnd>],
    tail: u64,
) -> BroadcastVerdict {
    let mut bv = BroadcastVerdict::default();
    let v = &mut bv.verdict;
    v.committed = tail;
    let example = |v: &mut Verdict, s: String| {
        if v.examples.len() < 10 {
            v.examples.push(s);
        }
    };
    // The publishers tile [0, tail): each starts where the previous one's commits end.
    let ran: Vec<&PublisherEnd> = publishers.iter().filter(|p| p.joined).collect();
    let mut owners: Vec<(u64, u32)> = Vec::new();
    let mut end = 0u64;
    let mut prev_clean = true;
    for p in &ran {
        let fits = p.base == end || (!prev_clean && p.base == end + 1);
        if !fits {
            bv.sequence_breaks += 1;
            example(
                v,
                format!(
                    "broadcast sequence: publisher {} started at {}, its predecessor's commits ended at {end}{}",
                    p.id,
                    p.base,
                    if prev_clean { "" } else { " (+1 if killed)" }
                ),
            );
        }
        owners.push((p.base, p.id));
        end = p.committed.max(p.base);
        prev_clean = p.clean;
    }
    if !(tail == end || (!prev_clean && tail == end + 1)) {
        bv.sequence_breaks += 1;
        example(
            v,
            format!(
                "broadcast sequence: the ring's tail is {tail}, the last publisher's commits ended at {end}"
            ),
        );
    }
    let owner = |pos: u64| -> Option<u32> {
        let i = owners.partition_point(|&(b, _)| b <= pos);
        i.checked_sub(1).map(|i| owners[i].1)
    };

    let mut pi = 0usize;
    for (si, seat) in seats.iter().enumerate() {
        // Where the seat's previous process's coverage ended.
        let mut prev_end: Option<u64> = None;
        for s in seat {
            pi += 1;
            if !s.joined {
                if !s.records.is_empty() {
                    v.phantom += s.records.len() as u64;
                    v.delivered += s.records.len() as u64;
                    example(
                        v,
                        format!(
                            "phantom: subscriber process {pi} (seat {si}) logged messages but never joined"
                        ),
                    );
                }
                continue;
            }
            bv.joins += 1;
            if let Some(e) = prev_end {
                if s.base < e {
                    bv.rejoin_redelivered += e - s.base;
                } else {
                    bv.rejoin_missed += s.base - e;
                }
            }
            let mut seen: Vec<bool> = Vec::new();
            let mut next = s.base;
            for r in &s.records {
                v.delivered += 1;
                let pos = u64::from(r.seq);
                if !r.intact() {
                    v.torn += 1;
                    example(
                        v,
                        format!(
                            "torn: subscriber process {pi} (seat {si}): position {pos} carried checksum {:08x}, computed {:08x}",
                            r.carried, r.computed
                        ),
                    );
                }
                if pos >= tail || pos < s.base || owner(pos) != Some(r.producer) {
                    v.phantom += 1;
                    example(
                        v,
                        format!(
                            "phantom: subscriber process {pi} (seat {si}, joined at {}) got position {pos} from publisher {}; the ring committed {tail}, that position by {:?}",
                            s.base,
                            r.producer,
                            owner(pos)
                        ),
                    );
                    continue;
                }
                let i = (pos - s.base) as usize;
                if seen.len() <= i {
                    seen.resize(i + 1, false);
                }
                if seen[i] {
                    v.duplicated += 1;
                    example(
                        v,
                        format!(
                            "duplicated: subscriber process {pi} (seat {si}) got position {pos} twice"
                        ),
                    );
                    continue;
                }
                seen[i] = true;
                if pos < next {
                    v.reordered += 1;
                    example(
                        v,
                        format!(
                            "reordered: subscriber process {pi} (seat {si}) got position {pos} after a later one"
                        ),
                    );
                }
                next = next.max(pos + 1);
            }
            // A clean subscriber read up to the tail; a killed one up to its last.
            let upto = if s.clean { tail } else { next };
            for (i, got) in (s.base..upto).zip(seen.iter().chain(std::iter::repeat(&false))) {
                if !got {
                    v.lost += 1;
                    example(
                        v,
                        format!(
                            "lost: subscriber process {pi} (seat {si}, joined at {}) never got position {i} (of {upto})",
                            s.base
                        ),
                    );
                }
            }
            prev_end = Some(next);
        }
    }
    bv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(producer: u32, seq: u32) -> Record {
        Record {
            producer,
            seq,
            carried: 7,
            computed: 7,
        }
    }

    fn publisher(id: u32, base: u64, committed: u64, clean: bool) -> PublisherEnd {
        PublisherEnd {
            id,
            joined: true,
            base,
            committed,
            clean,
        }
    }

    /// Positions `from..to`, publisher 1 up to 50, publisher 2 after.
    fn sub(from: u32, to: u32, clean: bool) -> SubscriberEnd {
        SubscriberEnd {
            joined: true,
            base: u64::from(from),
            records: (from..to)
                .map(|s| rec(if s < 50 { 1 } else { 2 }, s))
                .collect(),
            clean,
        }
    }

    fn healthy() -> (Vec<PublisherEnd>, Vec<Vec<SubscriberEnd>>) {
        (
            vec![publisher(1, 0, 49, false), publisher(2, 50, 100, true)],
            vec![
                vec![sub(0, 100, true)],
                vec![sub(0, 30, false), sub(25, 100, true)],
                vec![sub(0, 30, false), sub(40, 100, true)],
            ],
        )
    }

    #[test]
    fn a_healthy_run_passes_and_counts_rejoins() {
        let (p, s) = healthy();
        let bv = check(&p, &s, 100);
        assert!(bv.passed(), "{bv:?}");
        assert_eq!((bv.rejoin_redelivered, bv.rejoin_missed), (5, 10));
        assert_eq!(bv.joins, 5);
        assert_eq!(bv.verdict.delivered, 100 + 30 + 75 + 30 + 60);
    }

    #[test]
    fn faults_are_reported() {
        let (p, mut s) = healthy();
        s[0][0].records.remove(10);
        assert_eq!(check(&p, &s, 100).verdict.lost, 1);

        let (p, mut s) = healthy();
        s[1][1].records.pop();
        assert_eq!(
            check(&p, &s, 100).verdict.lost,
            1,
            "a clean one reads to the tail"
        );

        let (p, mut s) = healthy();
        s[1][0].records.pop();
        assert!(check(&p, &s, 100).passed(), "a killed one need not");

        let (p, mut s) = healthy();
        let r = s[0][0].records[10];
        s[0][0].records.insert(11, r);
        assert_eq!(check(&p, &s, 100).verdict.duplicated, 1);

        let (p, mut s) = healthy();
        s[0][0].records.swap(10, 12);
        let v = check(&p, &s, 100).verdict;
        assert_eq!((v.reordered, v.lost), (2, 0), "{v:?}");

        let (p, mut s) = healthy();
        s[2][1].records[3].computed ^= 1;
        assert_eq!(check(&p, &s, 100).verdict.torn, 1);

        let (p, mut s) = healthy();
        s[0][0].records.push(rec(2, 100));
        assert_eq!(check(&p, &s, 100).verdict.phantom, 1);

        let (p, mut s) = healthy();
        s[0][0].records[60].producer = 1;
        assert_eq!(
            check(&p, &s, 100).verdict.phantom,
            1,
            "from the wrong publisher"
        );
    }

    #[test]
    fn a_break_in_the_publishers_sequence_is_reported() {
        let (mut p, s) = healthy();
        p[1].base = 48;
        assert_eq!(check(&p, &s, 100).sequence_breaks, 1);
        let (mut p, s) = healthy();
        p[0].clean = true;
        assert_eq!(
            check(&p, &s, 100).sequence_breaks,
            1,
            "a clean one's count is exact"
        );
        let (p, s) = healthy();
        assert_eq!(check(&p, &s, 101).sequence_breaks, 1);
    }
}
