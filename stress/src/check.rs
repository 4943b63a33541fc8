//! The message checker: reads what producers committed and what consumers logged, and
//! counts what was lost, duplicated, delivered again after a consumer's death, out of
//! order, torn, or never sent.
//!
//! The rules, per producer (each worker process that produces is one producer, with
//! sequence numbers 0, 1, 2, ... committed in order):
//!
//! - **committed**: the producer's counter says how many it committed (it stores the
//!   count right after each commit; a producer killed between a commit and the store
//!   committed one more, which a delivery of that sequence number proves). Everything
//!   below the committed count must have been delivered: a hole is `lost_committed`.
//! - **redelivered**: a consumer killed after logging a message and before releasing it
//!   makes the ring hand that message to another consumer. A second delivery of a
//!   message that is the last record of a killed consumer's log is counted as
//!   `redelivered`, any other extra delivery as `duplicated`.
//! - **reordered**: within one consumer's log, a producer's sequence numbers only grow,
//!   except for a redelivered message: one a killed consumer logged last, or, up to the
//!   number of redeliveries the ring counted and the logs do not show (a consumer
//!   killed between its peek and its log write), a message delivered once.
//! - **torn**: the checksum carried by the message differs from the one computed over
//!   what arrived.
//! - **phantom**: a delivery of a sequence number the producer never reached, or of a
//!   producer that never existed.

use std::collections::HashMap;

use crate::wire::Record;

/// What a producer left behind.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProducerEnd {
    /// Messages it had committed when it last stored its counter.
    pub committed: u64,
    /// Whether it stopped when told to (its counter is exact) rather than being killed
    /// (it may have committed one more).
    pub clean: bool,
}

/// One consumer process's log.
#[derive(Clone, Debug, Default)]
pub struct ConsumerLog {
    /// What it received, in order.
    pub records: Vec<Record>,
    /// Whether it was killed (its last message may be delivered again).
    pub killed: bool,
}

/// The checker's verdict on one ring family (or several, producers being distinct).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Messages committed, per the producers (and deliveries that prove one more).
    pub committed: u64,
    /// Records in the consumers' logs (redeliveries included).
    pub delivered: u64,
    /// Committed messages nobody received.
    pub lost: u64,
    /// Extra deliveries not explained by a consumer's death.
    pub duplicated: u64,
    /// Extra deliveries of a message a killed consumer held.
    pub redelivered: u64,
    /// Deliveries that went backwards in one consumer's sequence of one producer.
    pub reordered: u64,
    /// Deliveries whose checksum did not match.
    pub torn: u64,
    /// Deliveries that went backwards, explained by a redelivery the ring counted but
    /// no log shows (the killed consumer died before writing its record).
    pub late_redeliveries: u64,
    /// Deliveries of messages never committed.
    pub phantom: u64,
    /// Up to 10 examples of each failure, for the report.
    pub examples: Vec<String>,
}

impl Verdict {
    /// Whether nothing failed.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.reordered == 0
            && self.torn == 0
            && self.phantom == 0
    }

    fn example(&mut self, s: String) {
        if self.examples.len() < 10 {
            self.examples.push(s);
        }
    }

    /// Adds another family's verdict.
    pub fn merge(&mut self, o: Verdict) {
        self.committed += o.committed;
        self.delivered += o.delivered;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        self.redelivered += o.redelivered;
        self.reordered += o.reordered;
        self.torn += o.torn;
        self.late_redeliveries += o.late_redeliveries;
        self.phantom += o.phantom;
        for e in o.examples {
            self.example(e);
        }
    }
}

/// Checks one queue (MPMC or SPSC ring): every message goes to exactly one consumer.
/// Consumers' logs are read one at a time (`consumers` may load them lazily).
/// `ring_redelivered` is the ring's own count of redeliveries (MPMC rings keep one);
/// `None` where a late redelivery cannot happen (an SPSC ring's next consumer starts
/// with the message its dead predecessor held).
pub fn check_queue(
    producers: &HashMap<u32, ProducerEnd>,
    consumers: impl IntoIterator<Item = ConsumerLog>,
    ring_redelivered: Option<u64>,
) -> Verdict {
    let mut v = Verdict::default();
    // Deliveries seen per producer (bitmap) and extra deliveries per message.
    let mut seen: HashMap<u32, Vec<u64>> = HashMap::new();
    let mut max_seen: HashMap<u32, u64> = HashMap::new();
    let mut extra: HashMap<(u32, u32), u64> = HashMap::new();
    // Messages a killed consumer logged last: each may be delivered once more.
    let mut excused: HashMap<(u32, u32), u64> = HashMap::new();
    let mut backwards: Vec<(u32, u32, usize)> = Vec::new();

    for (ci, c) in consumers.into_iter().enumerate() {
        if c.killed
            && let Some(last) = c.records.last()
        {
            *excused.entry((last.producer, last.seq)).or_default() += 1;
        }
        let mut newest: HashMap<u32, u32> = HashMap::new();
        for r in &c.records {
            v.delivered += 1;
            if !r.intact() {
                v.torn += 1;
                v.example(format!(
                    "torn: consumer log {ci}: producer {} seq {} carried checksum {:08x}, computed {:08x}",
                    r.producer, r.seq, r.carried, r.computed
                ));
            }
            let Some(end) = producers.get(&r.producer) else {
                if r.intact() {
                    v.phantom += 1;
                    v.example(format!(
                        "phantom: consumer log {ci}: producer {} never existed (seq {})",
                        r.producer, r.seq
                    ));
                }
                continue;
            };
            let bound = end.committed + u64::from(!end.clean);
            if u64::from(r.seq) >= bound {
                v.phantom += 1;
                v.example(format!(
                    "phantom: producer {} seq {} delivered, but it committed only {}{}",
                    r.producer,
                    r.seq,
                    end.committed,
                    if end.clean { "" } else { " (+1 if killed)" }
                ));
                continue;
            }
            let bits = seen.entry(r.producer).or_default();
            let (w, b) = ((r.seq / 64) as usize, r.seq % 64);
            if bits.len() <= w {
                bits.resize(w + 1, 0);
            }
            if bits[w] & (1 << b) != 0 {
                *extra.entry((r.producer, r.seq)).or_default() += 1;
            } else {
                bits[w] |= 1 << b;
            }
            let m = max_seen.entry(r.producer).or_default();
            *m = (*m).max(u64::from(r.seq) + 1);
            match newest.get_mut(&r.producer) {
                Some(n) if r.seq < *n => backwards.push((r.producer, r.seq, ci)),
                Some(n) => *n = r.seq,
                None => {
                    newest.insert(r.producer, r.seq);
                }
            }
        }
    }

    let mut extras: Vec<_> = extra.iter().map(|(&k, &n)| (k, n)).collect();
    extras.sort_unstable();
    for ((p, s), n) in extras {
        let ok = excused.get(&(p, s)).copied().unwrap_or(0).min(n);
        v.redelivered += ok;
        v.duplicated += n - ok;
        if n > ok {
            v.example(format!(
                "duplicated: producer {p} seq {s} delivered {} times",
                n + 1
            ));
        }
    }
    // A consumer killed after its peek and before its log write leaves no record of
    // the message the ring redelivers: the ring's own count of redeliveries, less the
    // ones the logs show, bounds how many late deliveries of a once-delivered message
    // that explains.
    let mut unlogged = ring_redelivered.unwrap_or(0).saturating_sub(v.redelivered);
    for (p, s, ci) in backwards {
        if excused.contains_key(&(p, s)) {
            continue;
        }
        if unlogged > 0 && !extra.contains_key(&(p, s)) {
            unlogged -= 1;
            v.late_redeliveries += 1;
            continue;
        }
        v.reordered += 1;
        v.example(format!(
            "reordered: consumer log {ci} received producer {p} seq {s} after a later one"
        ));
    }
    let mut ids: Vec<_> = producers.keys().copied().collect();
    ids.sort_unstable();
    for p in ids {
        let end = producers[&p];
        let committed = end.committed.max(max_seen.get(&p).copied().unwrap_or(0));
        v.committed += committed;
        let bits = seen.get(&p).map(Vec::as_slice).unwrap_or(&[]);
        for s in 0..committed {
            let (w, b) = ((s / 64) as usize, s % 64);
            if bits.get(w).is_none_or(|x| x & (1 << b) == 0) {
                v.lost += 1;
                v.example(format!(
                    "lost: producer {p} seq {s} was committed (of {committed}) and never received"
                ));
            }
        }
    }
    v
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

    fn clean(committed: u64) -> ProducerEnd {
        ProducerEnd {
            committed,
            clean: true,
        }
    }

    /// Two producers of 100 messages each, interleaved over two consumers.
    fn healthy() -> (HashMap<u32, ProducerEnd>, Vec<ConsumerLog>) {
        let producers = HashMap::from([(1, clean(100)), (2, clean(100))]);
        let mut a = ConsumerLog::default();
        let mut b = ConsumerLog::default();
        for s in 0..100 {
            let (x, y) = if s % 3 == 0 {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            x.records.push(rec(1, s));
            y.records.push(rec(2, s));
        }
        (producers, vec![a, b])
    }

    #[test]
    fn a_healthy_run_passes() {
        let (p, c) = healthy();
        let v = check_queue(&p, c.clone(), None);
        assert!(v.passed(), "{v:?}");
        assert_eq!((v.committed, v.delivered), (200, 200));
    }

    #[test]
    fn a_lost_message_is_reported() {
        let (p, mut c) = healthy();
        let i = c[0].records.iter().position(|r| *r == rec(2, 40)).unwrap();
        c[0].records.remove(i);
        let v = check_queue(&p, c.clone(), None);
        assert_eq!(v.lost, 1, "{v:?}");
        assert!(v.examples[0].contains("producer 2 seq 40"));
    }

    #[test]
    fn a_lost_tail_is_reported_from_the_committed_count() {
        let (p, mut c) = healthy();
        c[0].records.retain(|r| *r != rec(1, 99));
        c[1].records.retain(|r| *r != rec(1, 99));
        assert_eq!(check_queue(&p, c.clone(), None).lost, 1);
    }

    #[test]
    fn a_duplicate_is_reported_unless_a_killed_consumer_held_it() {
        let (p, mut c) = healthy();
        c[1].records.push(rec(1, 0));
        let v = check_queue(&p, c.clone(), None);
        assert_eq!((v.duplicated, v.redelivered), (1, 0), "{v:?}");

        // The same extra delivery, when the first was a killed consumer's last record.
        let (p, mut c) = healthy();
        let mut dead = ConsumerLog {
            killed: true,
            ..Default::default()
        };
        let i = c[0].records.iter().position(|r| *r == rec(1, 30)).unwrap();
        dead.records.push(c[0].records[i]);
        c.push(dead);
        let v = check_queue(&p, c.clone(), None);
        assert_eq!((v.duplicated, v.redelivered), (0, 1), "{v:?}");
        assert!(v.passed());

        // Not its last record: a real duplicate.
        let (p, mut c) = healthy();
        c.push(ConsumerLog {
            killed: true,
            records: vec![rec(1, 30), rec(2, 31)],
        });
        let v = check_queue(&p, c.clone(), None);
        assert_eq!((v.duplicated, v.redelivered), (1, 1), "{v:?}");
    }

    #[test]
    fn a_reordered_message_is_reported_unless_redelivered() {
        let (p, mut c) = healthy();
        let recs = &mut c[1].records;
        let i = recs.iter().position(|r| *r == rec(1, 50)).unwrap();
        let j = recs.iter().position(|r| *r == rec(1, 52)).unwrap();
        recs.swap(i, j);
        let v = check_queue(&p, c.clone(), None);
        assert_eq!(v.reordered, 1, "{v:?}");
        assert_eq!((v.lost, v.duplicated), (0, 0));

        // A redelivered message arriving after later ones of its producer is fine.
        let (p, mut c) = healthy();
        let i = c[1].records.iter().position(|r| *r == rec(1, 50)).unwrap();
        let held = c[1].records.remove(i);
        c[1].records.push(held);
        c.push(ConsumerLog {
            killed: true,
            records: vec![held],
        });
        let v = check_queue(&p, c.clone(), None);
        assert!(v.passed(), "{v:?}");
        assert_eq!(v.redelivered, 1);
    }

    #[test]
    fn a_torn_message_is_reported() {
        let (p, mut c) = healthy();
        c[0].records[5].computed ^= 0x10;
        let v = check_queue(&p, c.clone(), None);
        assert_eq!((v.torn, v.lost), (1, 0), "{v:?}");
    }

    #[test]
    fn a_message_never_committed_is_a_phantom() {
        let (p, mut c) = healthy();
        c[0].records.push(rec(1, 100));
        c[0].records.push(rec(9, 0));
        assert_eq!(check_queue(&p, c.clone(), None).phantom, 2);
        // A killed producer may have committed one more than it counted.
        let (mut p, mut c) = healthy();
        p.insert(
            1,
            ProducerEnd {
                committed: 99,
                clean: false,
            },
        );
        let v = check_queue(&p, c.clone(), None);
        assert!(v.passed(), "{v:?}");
        assert_eq!(v.committed, 200);
        c[0].records.push(rec(1, 100));
        assert_eq!(check_queue(&p, c.clone(), None).phantom, 1);
    }

    #[test]
    fn a_late_message_is_excused_only_by_a_redelivery_the_ring_counted() {
        let (p, mut c) = healthy();
        let i = c[1].records.iter().position(|r| *r == rec(1, 50)).unwrap();
        let held = c[1].records.remove(i);
        c[1].records.push(held);
        assert_eq!(check_queue(&p, c.clone(), None).reordered, 1);
        assert_eq!(check_queue(&p, c.clone(), Some(0)).reordered, 1);
        let v = check_queue(&p, c.clone(), Some(1));
        assert_eq!((v.reordered, v.late_redeliveries), (0, 1), "{v:?}");
        // One counted redelivery explains one late message, not two.
        let i = c[0].records.iter().position(|r| *r == rec(2, 50)).unwrap();
        let held = c[0].records.remove(i);
        c[0].records.push(held);
        assert_eq!(check_queue(&p, c.clone(), Some(1)).reordered, 1);
    }
}
