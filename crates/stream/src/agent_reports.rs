//! What agents report about themselves (receiver health, subscription status), on its way
//! to the store, so that `fluxgate agent show` and `fluxgate explain` have it.
//!
//! Streams hand reports over without waiting; one writer task for the whole replica keeps
//! only the newest report of each kind per agent and writes them, so a slow database never
//! holds up a stream, a report is never overwritten by an older one, and an idle stream
//! costs no task of its own. A failed write is logged and counted; the agent's next report
//! (or next stream) writes again. At shutdown the writer saves what is waiting.

use std::collections::HashMap;
use std::sync::Arc;

use fluxgate_core::{AgentId, AgentName, ReceiverHealth, SubscriptionReport};
use fluxgate_store::Store;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metric_names as names;

/// One agent's newest unwritten report of one kind.
enum Report {
    ReceiverHealth(ReceiverHealth),
    SubscriptionStatus(SubscriptionReport),
}

/// Which of an agent's reports a [`Report`] replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ReportKind {
    ReceiverHealth,
    SubscriptionStatus,
}

/// The newest reports waiting to be written, shared by every stream of this replica.
#[derive(Default)]
pub struct AgentReports {
    pending: Mutex<HashMap<(AgentId, ReportKind), (AgentName, Report)>>,
    waiting: Notify,
}

impl AgentReports {
    /// Queues `report` as `agent`'s receiver health, replacing any unwritten one.
    pub fn receiver_health(&self, agent: AgentId, name: &AgentName, report: ReceiverHealth) {
        self.queue(
            agent,
            name,
            ReportKind::ReceiverHealth,
            Report::ReceiverHealth(report),
        );
    }

    /// Queues `report` as `agent`'s subscription status, replacing any unwritten one.
    pub fn subscription_status(
        &self,
        agent: AgentId,
        name: &AgentName,
        report: SubscriptionReport,
    ) {
        self.queue(
            agent,
            name,
            ReportKind::SubscriptionStatus,
            Report::SubscriptionStatus(report),
        );
    }

    fn queue(&self, agent: AgentId, name: &AgentName, kind: ReportKind, report: Report) {
        self.pending
            .lock()
            .insert((agent, kind), (name.clone(), report));
        self.waiting.notify_one();
    }

    /// Writes reports as they come until `shutdown`, then what is left.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.waiting.notified() => self.write_pending(store.as_ref()).await,
            }
        }
        self.write_pending(store.as_ref()).await;
    }

    /// Writes every waiting report, one agent after the other.
    pub async fn write_pending(&self, store: &dyn Store) {
        let batch: Vec<_> = self.pending.lock().drain().collect();
        for ((agent, _), (name, report)) in batch {
            write(store, agent, &name, &report).await;
        }
    }
}

async fn write(store: &dyn Store, agent: AgentId, name: &AgentName, report: &Report) {
    match report {
        Report::ReceiverHealth(report) => match store.save_receiver_health(agent, report).await {
            Ok(()) => {
                tracing::debug!(agent = %name, failing = report.failing.len(), "receiver health saved")
            }
            Err(err) => {
                metrics::counter!(names::RECEIVER_HEALTH_SAVE_ERRORS).increment(1);
                tracing::warn!(agent = %name, error = %err, "cannot save the agent's receiver health");
            }
        },
        Report::SubscriptionStatus(report) => {
            match store.save_subscription_status(agent, report).await {
                Ok(()) => {
                    tracing::debug!(agent = %name, subscriptions = report.subscriptions.len(), "subscription status saved")
                }
                Err(err) => {
                    metrics::counter!(names::SUBSCRIPTION_STATUS_SAVE_ERRORS).increment(1);
                    tracing::warn!(agent = %name, error = %err, "cannot save the agent's subscription status");
                }
            }
        }
    }
}
