//! The end of the fault run: waits (with a deadline) until every acknowledged hook has
//! reached its Receiver, then judges and prints the table.
//!
//! A hook counts as delivered when its Receiver answered 200 to a call for its own event.
//! The agent also coalesces a burst for one Receiver into one call for the newest event
//! (Flux then fetches the newest commit, which covers the older ones), also while it
//! retries a failing Receiver: an event counts as coalesced when a later event's call
//! succeeded after its own last call. An event whose calls were refused and that nothing
//! later covered was given up. A hook acknowledged with 2xx and not delivered is lost. (A
//! Receiver's last events before it went quiet are covered by no later push, so an agent
//! that gives up on a failing Receiver shows here: see the stall phase.)

use std::collections::BTreeMap;
use std::time::Duration;

use fluxgate_e2e::flux_receiver::FluxReceiverStandIn;
use tokio::time::Instant;

use super::cluster::ReceiverSlot;
use super::faults::FaultLog;
use super::load::HookRecord;

/// One Receiver's row of the table.
#[derive(Debug, Default, Clone)]
pub struct ReceiverTally {
    pub name: String,
    pub sent: usize,
    pub acknowledged: usize,
    /// Acknowledged, and its own event reached the Receiver.
    pub delivered: usize,
    /// Acknowledged, never sent itself, and covered by a later event's call (coalesced).
    pub coalesced: usize,
    /// Acknowledged and never delivered.
    pub lost: usize,
    /// Of the lost: its own calls were refused, and it was not sent again (given up).
    pub given_up: usize,
    /// Calls the Receiver refused (non-2xx), retries included.
    pub refused_calls: usize,
    /// Successful calls for an event that had already had one (at-least-once).
    pub repeated_calls: usize,
    /// Never acknowledged; every failed attempt fell in an injected outage.
    pub unacknowledged_outage: usize,
    /// Never acknowledged although some attempt failed outside any outage.
    pub unacknowledged_unexplained: usize,
    /// Failed attempts (before a later attempt succeeded or not).
    pub failed_attempts: usize,
    pub unexplained_failed_attempts: usize,
}

/// The judgement of the whole run.
pub struct Verdict {
    pub rows: Vec<ReceiverTally>,
    pub totals: ReceiverTally,
    /// Examples of what went wrong, for the report.
    pub problems: Vec<String>,
    /// How long the final wait for deliveries took.
    pub drained_in: Duration,
    /// From a hook's first send to its own successful Receiver call (delivered hooks).
    pub to_receiver: hdrhistogram::Histogram<u64>,
    /// The same, per hook by number (`None` unless delivered by its own call).
    pub reached_in: Vec<Option<Duration>>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.totals.lost == 0
            && self.totals.unacknowledged_unexplained == 0
            && self.totals.unexplained_failed_attempts == 0
            && self.problems.is_empty()
    }
}

/// The calls one Receiver got, by the seq of the event they carried.
#[derive(Default)]
struct Calls {
    /// seq → how many calls got a 2xx.
    succeeded: BTreeMap<u64, usize>,
    /// seq → when the first call that got a 2xx arrived.
    first_success: BTreeMap<u64, std::time::Instant>,
    /// seq → how many calls were refused.
    refused: BTreeMap<u64, usize>,
    /// seq → when the last refused call arrived.
    last_refused: BTreeMap<u64, std::time::Instant>,
}

impl Calls {
    fn of(flux: &FluxReceiverStandIn, receiver: &ReceiverSlot) -> Self {
        let mut calls = Self::default();
        for hit in flux.hits(&receiver.name) {
            let Some(seq) = serde_json::from_slice::<serde_json::Value>(&hit.body)
                .ok()
                .and_then(|body| body["seq"].as_u64())
            else {
                continue;
            };
            let counts = if hit.status.is_success() {
                calls.first_success.entry(seq).or_insert(hit.received_at);
                &mut calls.succeeded
            } else {
                let last = calls.last_refused.entry(seq).or_insert(hit.received_at);
                *last = (*last).max(hit.received_at);
                &mut calls.refused
            };
            *counts.entry(seq).or_insert(0) += 1;
        }
        calls
    }

    /// How the event `seq` ended at this Receiver.
    fn outcome(&self, seq: u64) -> Outcome {
        if self.succeeded.contains_key(&seq) {
            Outcome::Delivered
        } else if self.covered_later(seq) {
            Outcome::Coalesced
        } else if self.refused.contains_key(&seq) {
            Outcome::GivenUp
        } else {
            Outcome::NotYet
        }
    }

    /// A later event's call succeeded after the last call for `seq` (if it had any).
    fn covered_later(&self, seq: u64) -> bool {
        let last_refused = self.last_refused.get(&seq);
        self.first_success
            .range(seq + 1..)
            .any(|(_, at)| last_refused.is_none_or(|refused| at > refused))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Coalesced,
    /// Sent, refused, and (so far) never sent successfully.
    GivenUp,
    NotYet,
}

fn calls_of(flux: &FluxReceiverStandIn, receivers: &[ReceiverSlot]) -> Vec<Calls> {
    receivers.iter().map(|r| Calls::of(flux, r)).collect()
}

/// Waits up to `deadline` until every acknowledged hook is delivered, then tallies.
pub async fn judge(
    hooks: &[HookRecord],
    faults: &FaultLog,
    flux: &FluxReceiverStandIn,
    receivers: &[ReceiverSlot],
    deadline: Duration,
) -> Verdict {
    let started = Instant::now();
    // A refused event may still be sent again (an agent that retries until it succeeds),
    // so the wait goes on until every event was delivered or coalesced.
    let pending = |calls: &[Calls]| {
        hooks.iter().any(|hook| {
            hook.acknowledged
                .as_ref()
                .and_then(|ack| ack.seq)
                .is_some_and(|seq| {
                    !matches!(
                        calls[hook.receiver].outcome(seq),
                        Outcome::Delivered | Outcome::Coalesced
                    )
                })
        })
    };
    let mut calls = calls_of(flux, receivers);
    while pending(&calls) && started.elapsed() < deadline {
        tokio::time::sleep(Duration::from_millis(250)).await;
        calls = calls_of(flux, receivers);
    }
    let drained_in = started.elapsed();

    let mut rows: Vec<ReceiverTally> = receivers
        .iter()
        .map(|r| ReceiverTally {
            name: r.name.clone(),
            ..ReceiverTally::default()
        })
        .collect();
    let mut problems = Vec::new();
    let mut to_receiver = crate::report::latency_histogram();
    let mut reached_in = vec![None; hooks.len()];
    for (number, hook) in hooks.iter().enumerate() {
        let row = &mut rows[hook.receiver];
        row.sent += 1;
        row.failed_attempts += hook.failures.len();
        let mut unexplained = 0;
        for failure in &hook.failures {
            if !faults.explains(failure.replica, failure.started, failure.ended) {
                unexplained += 1;
                if problems.len() < 20 {
                    problems.push(format!(
                        "hook {number} to replica {}: failed outside any outage ({:.1} s after the hook was first sent): {}",
                        ["a", "b"][failure.replica],
                        failure.started.duration_since(hook.sent).as_secs_f64(),
                        failure.reason
                    ));
                }
            }
        }
        row.unexplained_failed_attempts += unexplained;
        match &hook.acknowledged {
            None if unexplained == 0 => row.unacknowledged_outage += 1,
            None => row.unacknowledged_unexplained += 1,
            Some(ack) => {
                row.acknowledged += 1;
                let Some(seq) = ack.seq else {
                    problems.push(format!(
                        "hook {number}: replica {} answered 2xx without a seq",
                        ["a", "b"][ack.replica]
                    ));
                    continue;
                };
                let outcome = calls[hook.receiver].outcome(seq);
                match outcome {
                    Outcome::Delivered => {
                        row.delivered += 1;
                        if let Some(called) = calls[hook.receiver].first_success.get(&seq) {
                            let latency = called.saturating_duration_since(hook.sent.into_std());
                            crate::report::record(&mut to_receiver, latency);
                            reached_in[number] = Some(latency);
                        }
                    }
                    Outcome::Coalesced => row.coalesced += 1,
                    Outcome::GivenUp | Outcome::NotYet => {
                        row.lost += 1;
                        if outcome == Outcome::GivenUp {
                            row.given_up += 1;
                        }
                        if problems.len() < 40 {
                            problems.push(format!(
                                "hook {number} (seq {seq}, receiver {}): acknowledged by replica {} and never delivered{}",
                                row.name,
                                ["a", "b"][ack.replica],
                                if outcome == Outcome::GivenUp {
                                    " (its calls were refused and it was not sent again)"
                                } else {
                                    ""
                                }
                            ));
                        }
                    }
                }
            }
        }
    }
    for (row, calls) in rows.iter_mut().zip(&calls) {
        row.repeated_calls = calls.succeeded.values().map(|count| count - 1).sum();
        row.refused_calls = calls.refused.values().sum();
    }
    let totals = rows.iter().fold(
        ReceiverTally {
            name: "**total**".to_owned(),
            ..ReceiverTally::default()
        },
        |mut sum, row| {
            sum.sent += row.sent;
            sum.acknowledged += row.acknowledged;
            sum.delivered += row.delivered;
            sum.coalesced += row.coalesced;
            sum.lost += row.lost;
            sum.given_up += row.given_up;
            sum.refused_calls += row.refused_calls;
            sum.repeated_calls += row.repeated_calls;
            sum.unacknowledged_outage += row.unacknowledged_outage;
            sum.unacknowledged_unexplained += row.unacknowledged_unexplained;
            sum.failed_attempts += row.failed_attempts;
            sum.unexplained_failed_attempts += row.unexplained_failed_attempts;
            sum
        },
    );
    Verdict {
        rows,
        totals,
        problems,
        drained_in,
        to_receiver,
        reached_in,
    }
}

/// The table, as Markdown.
pub fn print_table(verdict: &Verdict) {
    println!(
        "| receiver | hooks sent | acknowledged (2xx) | delivered | coalesced into a later call | **lost** (of which given up) | refused calls | failed hook attempts (in an outage / outside) | never acknowledged (outage / other) | repeated calls |"
    );
    println!("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    for row in verdict.rows.iter().chain([&verdict.totals]) {
        println!(
            "| {} | {} | {} | {} | {} | {} ({}) | {} | {} / {} | {} / {} | {} |",
            row.name,
            row.sent,
            row.acknowledged,
            row.delivered,
            row.coalesced,
            row.lost,
            row.given_up,
            row.refused_calls,
            row.failed_attempts - row.unexplained_failed_attempts,
            row.unexplained_failed_attempts,
            row.unacknowledged_outage,
            row.unacknowledged_unexplained,
            row.repeated_calls,
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    /// Calls as (seq, milliseconds after a common start).
    fn calls(succeeded: &[(u64, u64)], refused: &[(u64, u64)]) -> Calls {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut calls = Calls::default();
        for &(seq, ms) in succeeded {
            *calls.succeeded.entry(seq).or_insert(0) += 1;
            calls.first_success.entry(seq).or_insert(at(ms));
        }
        for &(seq, ms) in refused {
            *calls.refused.entry(seq).or_insert(0) += 1;
            let last = calls.last_refused.entry(seq).or_insert(at(ms));
            *last = (*last).max(at(ms));
        }
        calls
    }

    #[test]
    fn an_event_sent_successfully_is_delivered_even_after_refusals() {
        assert_eq!(calls(&[(5, 10)], &[]).outcome(5), Outcome::Delivered);
        assert_eq!(
            calls(&[(5, 30)], &[(5, 10), (5, 20)]).outcome(5),
            Outcome::Delivered
        );
    }

    #[test]
    fn an_event_never_sent_is_covered_only_by_a_later_successful_call() {
        assert_eq!(calls(&[(9, 10)], &[]).outcome(5), Outcome::Coalesced);
        assert_eq!(calls(&[(3, 10)], &[]).outcome(5), Outcome::NotYet);
        assert_eq!(calls(&[], &[(9, 10)]).outcome(5), Outcome::NotYet);
    }

    #[test]
    fn a_refused_event_is_covered_by_a_newer_event_that_succeeded_after_it() {
        // The agent retried a failing Receiver with the newest event: that covers it.
        assert_eq!(
            calls(&[(9, 30)], &[(5, 10), (5, 20)]).outcome(5),
            Outcome::Coalesced
        );
    }

    #[test]
    fn a_refused_event_nothing_covered_afterwards_was_given_up() {
        assert_eq!(calls(&[], &[(5, 10)]).outcome(5), Outcome::GivenUp);
        // A newer event's success before this one's last refusal does not cover it.
        assert_eq!(
            calls(&[(9, 15)], &[(5, 10), (5, 20)]).outcome(5),
            Outcome::GivenUp
        );
    }
}
