//! The run's report: a human summary, or JSON with `--json`.

use serde_json::json;

use crate::broadcast::BroadcastVerdict;
use crate::check::Verdict;

/// Everything a run found.
#[derive(Clone, Debug)]
pub struct Report {
    /// How long the workers ran.
    pub seconds: f64,
    /// MPMC producers.
    pub producers: u32,
    /// MPMC consumers.
    pub consumers: u32,
    /// SPSC pairs.
    pub spsc: u32,
    /// Subscriber seats on the broadcast ring.
    pub subscribers: u32,
    /// The broadcast ring's checks, when it ran.
    pub broadcast: Option<BroadcastVerdict>,
    /// Largest payload.
    pub payload: usize,
    /// The seed (`--seed` replays the run's choices).
    pub seed: u64,
    /// The run's name prefix.
    pub prefix: String,
    /// The kill interval, if kills were injected.
    pub kill_interval_ms: Option<(u64, u64)>,
    /// The message checks, over every ring.
    pub verdict: Verdict,
    /// Workers killed: by the runner, or by their own hook inside a library step.
    pub kills: u64,
    /// Of `kills`, those inside a library step.
    pub hook_kills: u64,
    /// Workers started to replace one that died.
    pub restarts: u64,
    /// Lifecycle cycles completed.
    pub lifecycle_cycles: u64,
    /// Lifecycle retries that a later attempt resolved.
    pub lifecycle_retries: u64,
    /// Lifecycle attempts that failed (not resolved within the bound, or an error no
    /// retry resolves).
    pub lifecycle_failures: u64,
    /// Objects or creation debris of the run left after the end and a sweep.
    pub leaked_segments: u64,
    /// Objects removed by the final sweep (killed holders nobody looked at since).
    pub swept_at_end: u64,
    /// Permits taken and returned.
    pub permits_taken: u64,
    /// Permits not conserved, and permit workers' failures.
    pub permit_errors: u64,
    /// Permits available at the end.
    pub permits_available: u32,
    /// The semaphore's maximum.
    pub permits_max: u32,
    /// Increments acknowledged by mutex workers.
    pub mutex_increments: u64,
    /// The counter's final value.
    pub mutex_count: u64,
    /// Increments whose acknowledgement a death made uncertain.
    pub mutex_ambiguous: u64,
    /// Abandoned locks taken over.
    pub mutex_abandonments: u64,
    /// Two holders at once, or a count that disagrees with the acknowledgements.
    pub mutex_errors: u64,
    /// Positions of the MPMC ring skipped because their writer died (ring counter).
    pub ring_skipped: u64,
    /// Messages of the MPMC ring redelivered (ring counter).
    pub ring_redelivered: u64,
    /// Workers that failed (exited on an error, did not stop).
    pub worker_failures: u64,
    /// Longest time any family of workers made no progress.
    pub max_stall_ms: u64,
    /// Whether the watchdog ended the run.
    pub watchdog: bool,
    /// Whether the run was interrupted (SIGINT/SIGTERM).
    pub interrupted: bool,
    /// What went wrong, in words.
    pub failures: Vec<String>,
}

impl Report {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.verdict.passed()
            && self.broadcast.as_ref().is_none_or(BroadcastVerdict::passed)
            && self.leaked_segments == 0
            && self.permit_errors == 0
            && self.mutex_errors == 0
            && self.lifecycle_failures == 0
            && self.worker_failures == 0
            && !self.watchdog
            && self.failures.is_empty()
    }

    /// The report as JSON.
    pub fn json(&self) -> serde_json::Value {
        let v = &self.verdict;
        let b = self.broadcast.clone().unwrap_or_default();
        let bv = &b.verdict;
        json!({
            "passed": self.passed(),
            "seconds": (self.seconds * 1000.0).round() / 1000.0,
            "producers": self.producers,
            "consumers": self.consumers,
            "spsc": self.spsc,
            "subscribers": self.subscribers,
            "payload": self.payload,
            "seed": self.seed,
            "prefix": self.prefix,
            "kill_interval_ms": self.kill_interval_ms.map(|(lo, hi)| json!([lo, hi])),
            "messages_committed": v.committed,
            "messages_delivered": v.delivered,
            // Failures of every ring, the broadcast ring's included.
            "lost_committed": v.lost + bv.lost,
            "duplicated": v.duplicated + bv.duplicated,
            "redelivered": v.redelivered,
            "reordered": v.reordered + bv.reordered,
            "torn": v.torn + bv.torn,
            "late_redeliveries": v.late_redeliveries,
            "phantom": v.phantom + bv.phantom,
            "broadcast": self.broadcast.as_ref().map(|_| json!({
                "messages_committed": bv.committed,
                "messages_delivered": bv.delivered,
                "subscriber_joins": b.joins,
                "lost_committed": bv.lost,
                "duplicated": bv.duplicated,
                "reordered": bv.reordered,
                "torn": bv.torn,
                "phantom": bv.phantom,
                "sequence_breaks": b.sequence_breaks,
                "rejoin_redelivered": b.rejoin_redelivered,
                "rejoin_missed": b.rejoin_missed,
            })),
            "kills": self.kills,
            "hook_kills": self.hook_kills,
            "restarts": self.restarts,
            "lifecycle_cycles": self.lifecycle_cycles,
            "lifecycle_retries": self.lifecycle_retries,
            "lifecycle_failures": self.lifecycle_failures,
            "leaked_segments": self.leaked_segments,
            "swept_at_end": self.swept_at_end,
            "permits_taken": self.permits_taken,
            "permit_errors": self.permit_errors,
            "permits_available": self.permits_available,
            "permits_max": self.permits_max,
            "mutex_increments": self.mutex_increments,
            "mutex_count": self.mutex_count,
            "mutex_ambiguous": self.mutex_ambiguous,
            "mutex_abandonments": self.mutex_abandonments,
            "mutex_errors": self.mutex_errors,
            "ring_skipped": self.ring_skipped,
            "ring_redelivered": self.ring_redelivered,
            "worker_failures": self.worker_failures,
            "max_stall_ms": self.max_stall_ms,
            "watchdog": self.watchdog,
            "interrupted": self.interrupted,
            "failures": self.failures.iter().chain(&v.examples).chain(&bv.examples).collect::<Vec<_>>(),
        })
    }

    /// The report in words.
    pub fn human(&self) -> String {
        let v = &self.verdict;
        let mut s = format!(
            "tally-stress: {} after {:.1} s (seed {}, objects {}.*)\n",
            if self.passed() { "PASSED" } else { "FAILED" },
            self.seconds,
            self.seed,
            self.prefix
        );
        let kills = match self.kill_interval_ms {
            Some((lo, hi)) => format!(
                "{} ({} inside library steps), {} restarts; one every {lo}..{hi} ms",
                self.kills, self.hook_kills, self.restarts
            ),
            None => format!("none injected ({} restarts)", self.restarts),
        };
        s += &format!("  kills       {kills}\n");
        s += &format!(
            "  messages    {} committed by {} MPMC producers and {} SPSC pairs, {} delivered ({} redelivered after a consumer's death)\n",
            v.committed, self.producers, self.spsc, v.delivered, v.redelivered
        );
        s += &format!(
            "              lost {}, duplicated {}, reordered {}, torn {}, never sent {}\n              MPMC ring: {} positions skipped, {} messages redelivered ({} of them after later ones)\n",
            v.lost,
            v.duplicated,
            v.reordered,
            v.torn,
            v.phantom,
            self.ring_skipped,
            self.ring_redelivered,
            v.late_redeliveries
        );
        if let Some(b) = &self.broadcast {
            let bv = &b.verdict;
            s += &format!(
                "  broadcast   {} committed by the publisher(s), {} delivered to {} subscriber processes on {} seats\n              lost {}, duplicated {}, reordered {}, torn {}, never sent {}, sequence breaks {}\n              replacements: {} received again, {} missed while their seat was vacant (not failures)\n",
                bv.committed,
                bv.delivered,
                b.joins,
                self.subscribers,
                bv.lost,
                bv.duplicated,
                bv.reordered,
                bv.torn,
                bv.phantom,
                b.sequence_breaks,
                b.rejoin_redelivered,
                b.rejoin_missed
            );
        }
        s += &format!(
            "  permits     {} taken; {} of {} available at the end; errors {}\n",
            self.permits_taken, self.permits_available, self.permits_max, self.permit_errors
        );
        s += &format!(
            "  mutex       {} increments acknowledged, count {} (+{} uncertain), {} abandoned locks taken over; errors {}\n",
            self.mutex_increments,
            self.mutex_count,
            self.mutex_ambiguous,
            self.mutex_abandonments,
            self.mutex_errors
        );
        s += &format!(
            "  lifecycle   {} cycles, {} retries resolved, {} failures\n",
            self.lifecycle_cycles, self.lifecycle_retries, self.lifecycle_failures
        );
        s += &format!(
            "  /dev/shm    {} leaked ({} objects of killed holders removed by the final sweep)\n",
            self.leaked_segments, self.swept_at_end
        );
        s += &format!(
            "  stalls      longest {} ms{}; worker failures {}\n",
            self.max_stall_ms,
            if self.watchdog {
                " (watchdog fired)"
            } else {
                ""
            },
            self.worker_failures
        );
        let bex = self
            .broadcast
            .as_ref()
            .map(|b| &b.verdict.examples[..])
            .unwrap_or(&[]);
        let problems: Vec<&String> = self.failures.iter().chain(&v.examples).chain(bex).collect();
        if !problems.is_empty() {
            s += "failures:\n";
            for p in problems.iter().take(40) {
                for (i, line) in p.lines().enumerate() {
                    s += if i == 0 { "  - " } else { "    " };
                    s += line;
                    s += "\n";
                }
            }
        }
        s
    }
}
