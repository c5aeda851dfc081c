//! Leader election among an agent's replicas with a `coordination.k8s.io/v1` Lease, as
//! client-go's leaderelection does it.
//!
//! Every `retry_period` each replica reads the Lease:
//!
//! - absent: it creates the Lease naming itself, and leads;
//! - held by itself: it renews `renewTime` (a replace carrying the `resourceVersion` it
//!   read, so a concurrent writer makes it fail with 409), and keeps leading;
//! - held by another replica: it waits until the record (holder and `renewTime`) has not
//!   changed for `lease_duration`, measured on its own clock from when it first saw that
//!   record (so clocks need not agree), then takes the Lease over the same way.
//!
//! A leader that has not renewed for `renew_deadline` (shorter than `lease_duration`)
//! steps down before anyone else may take over, so two replicas never act at once. On
//! shutdown a leader releases the Lease (empty holder, 1 s duration) so a standby takes
//! over at its next retry instead of after a full lease.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::LeaderElection;

/// What one look at the Lease concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Leading,
    Following,
}

/// The record last seen, and when this replica first saw it.
#[derive(Debug, Clone, PartialEq)]
struct Observed {
    holder: String,
    renew_time: Option<String>,
    since: Instant,
}

/// Runs the election until `shutdown` fires; `leading` says whether this replica leads.
pub struct LeaderElector {
    api: Api<Lease>,
    settings: LeaderElection,
    leading: watch::Sender<bool>,
    observed: Option<Observed>,
}

impl LeaderElector {
    pub fn new(client: Client, settings: LeaderElection, leading: watch::Sender<bool>) -> Self {
        Self {
            api: Api::namespaced(client, &settings.lease_namespace),
            settings,
            leading,
            observed: None,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut last_renewed: Option<Instant> = None;
        loop {
            let outcome = self.try_acquire_or_renew().await;
            let now = Instant::now();
            match outcome {
                Ok(Outcome::Leading) => {
                    last_renewed = Some(now);
                    self.set_leading(true);
                }
                Ok(Outcome::Following) => {
                    last_renewed = None;
                    self.set_leading(false);
                }
                Err(error) => {
                    tracing::warn!(%error, lease = %self.settings.lease_name, "cannot read or write the leader Lease");
                    let overdue = last_renewed
                        .is_none_or(|at| now.duration_since(at) >= self.settings.renew_deadline);
                    if *self.leading.borrow() && overdue {
                        tracing::warn!(
                            renew_deadline = ?self.settings.renew_deadline,
                            "could not renew the leader Lease in time; stepping down"
                        );
                        self.set_leading(false);
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.settings.retry_period) => {}
            }
        }
        if *self.leading.borrow() {
            self.set_leading(false);
            self.release().await;
        }
    }

    fn set_leading(&self, leading: bool) {
        self.leading.send_if_modified(|current| {
            if *current == leading {
                return false;
            }
            if leading {
                tracing::info!(identity = %self.settings.identity, lease = %self.settings.lease_name, "became the leader");
            } else {
                tracing::info!(identity = %self.settings.identity, lease = %self.settings.lease_name, "no longer the leader");
            }
            *current = leading;
            true
        });
    }

    async fn try_acquire_or_renew(&mut self) -> Result<Outcome, kube::Error> {
        let name = &self.settings.lease_name;
        let Some(mut lease) = self.api.get_opt(name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.settings.lease_namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.held_spec(0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Outcome::Leading),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(Outcome::Following),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let renew_time = spec.renew_time.as_ref().map(|t| t.0.to_string());
        let now = Instant::now();
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|seen| seen.holder != holder || seen.renew_time != renew_time);
        if changed {
            self.observed = Some(Observed {
                holder: holder.clone(),
                renew_time,
                since: now,
            });
        }
        let since = self.observed.as_ref().map_or(now, |seen| seen.since);
        let transitions = spec.lease_transitions.unwrap_or(0);
        let spec = if holder == self.settings.identity {
            LeaseSpec {
                renew_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
                lease_duration_seconds: Some(seconds(self.settings.lease_duration)),
                ..spec
            }
        } else {
            let lease_seconds = spec
                .lease_duration_seconds
                .map_or(self.settings.lease_duration, |s| {
                    Duration::from_secs(s.max(0) as u64)
                });
            let expired = holder.is_empty() || now.duration_since(since) >= lease_seconds;
            if !expired {
                return Ok(Outcome::Following);
            }
            tracing::info!(previous = %holder, "the leader Lease has expired; taking it over");
            self.held_spec(transitions + 1)
        };
        lease.spec = Some(spec);
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(Outcome::Leading),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(Outcome::Following),
            Err(error) => Err(error),
        }
    }

    /// A spec naming this replica as the holder since now.
    fn held_spec(&self, transitions: i32) -> LeaseSpec {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        LeaseSpec {
            holder_identity: Some(self.settings.identity.clone()),
            lease_duration_seconds: Some(seconds(self.settings.lease_duration)),
            acquire_time: Some(now.clone()),
            renew_time: Some(now),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// Gives the Lease up so a standby takes over at once.
    async fn release(&self) {
        let name = &self.settings.lease_name;
        let Ok(Some(mut lease)) = self.api.get_opt(name).await else {
            return;
        };
        let Some(spec) = &mut lease.spec else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.settings.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        match self.api.replace(name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %name, "released the leader Lease"),
            Err(error) => tracing::warn!(%error, lease = %name, "cannot release the leader Lease"),
        }
    }
}

fn seconds(duration: Duration) -> i32 {
    i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)
}
