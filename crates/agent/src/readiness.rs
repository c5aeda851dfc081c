//! What `/readyz` reports: whether this agent is doing its job, and if not, why.
//!
//! - The broker stream: up once a Welcome arrived, down when the stream ends. Needed by an
//!   agent that acts (the leader, or an agent without leader election); a standby replica
//!   does not stream.
//! - The Kubernetes mode, when on: the Flux APIs are served, and the watches have listed
//!   their objects and are not failing.

use parking_lot::Mutex;
use serde::Serialize;

/// This replica's part in leader election.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// No election: this process always acts.
    Single,
    Leader,
    /// Another replica holds the lease; this one waits, ready to take over.
    Standby,
}

#[derive(Debug, Clone, Serialize)]
struct State {
    role: Role,
    broker_stream_up: bool,
    /// Why the broker stream cannot come up, when the agent knows it is not a passing
    /// outage (a wrong address); cleared once a stream is up.
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_problem: Option<String>,
    /// `None`: the Kubernetes mode is off.
    kubernetes: Option<KubernetesState>,
}

#[derive(Debug, Clone, Default, Serialize)]
struct KubernetesState {
    /// The Flux APIs the cluster does not serve (yet).
    flux_apis_missing: Vec<String>,
    /// Flux APIs the cluster does not serve that only some sources need (`OCIRepository`):
    /// named here, but the agent is ready without them.
    flux_apis_optional_missing: Vec<String>,
    /// Every watch has listed its objects at least once.
    watches_synced: bool,
    /// The last watch or API error, cleared when the watch works again.
    error: Option<String>,
}

/// The agent's readiness, shared by the parts that know it and the HTTP listener.
#[derive(Debug)]
pub struct Readiness {
    state: Mutex<State>,
}

/// One `/readyz` answer.
#[derive(Debug, Clone, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    /// Why not, when not ready.
    pub reasons: Vec<String>,
    #[serde(flatten)]
    state: State,
}

impl Readiness {
    pub fn new(kubernetes: bool) -> Self {
        Self {
            state: Mutex::new(State {
                role: Role::Single,
                broker_stream_up: false,
                broker_problem: None,
                kubernetes: kubernetes.then(KubernetesState::default),
            }),
        }
    }

    pub fn set_role(&self, role: Role) {
        self.state.lock().role = role;
    }

    pub fn set_broker_stream(&self, up: bool) {
        let mut state = self.state.lock();
        state.broker_stream_up = up;
        if up {
            state.broker_problem = None;
        }
    }

    /// The broker stream is down for a reason retrying will not fix (named in `/readyz`
    /// until a stream is up).
    pub fn set_broker_problem(&self, problem: String) {
        self.state.lock().broker_problem = Some(problem);
    }

    pub fn set_flux_apis_missing(&self, missing: Vec<String>) {
        if let Some(k) = &mut self.state.lock().kubernetes {
            k.flux_apis_missing = missing;
        }
    }

    pub fn set_flux_apis_optional_missing(&self, missing: Vec<String>) {
        if let Some(k) = &mut self.state.lock().kubernetes {
            k.flux_apis_optional_missing = missing;
        }
    }

    pub fn set_watches_synced(&self, synced: bool) {
        if let Some(k) = &mut self.state.lock().kubernetes {
            k.watches_synced = synced;
        }
    }

    pub fn set_kubernetes_error(&self, error: Option<String>) {
        if let Some(k) = &mut self.state.lock().kubernetes {
            k.error = error;
        }
    }

    pub fn report(&self) -> ReadinessReport {
        let state = self.state.lock().clone();
        let mut reasons = Vec::new();
        if state.role != Role::Standby && !state.broker_stream_up {
            reasons.push(match &state.broker_problem {
                Some(problem) => format!("the broker stream is not up: {problem}"),
                None => "the broker stream is not up".to_owned(),
            });
        }
        if let Some(k) = &state.kubernetes {
            for missing in &k.flux_apis_missing {
                reasons.push(format!("the cluster does not serve {missing}"));
            }
            if k.flux_apis_missing.is_empty() && !k.watches_synced {
                reasons.push("the Kubernetes watches have not listed their objects yet".to_owned());
            }
            if let Some(error) = &k.error {
                reasons.push(format!("Kubernetes: {error}"));
            }
        }
        ReadinessReport {
            ready: reasons.is_empty(),
            reasons,
            state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_is_ready_without_a_stream_and_a_leader_is_not() {
        let readiness = Readiness::new(true);
        readiness.set_watches_synced(true);
        readiness.set_role(Role::Standby);
        assert!(readiness.report().ready);
        readiness.set_role(Role::Leader);
        assert!(!readiness.report().ready);
        readiness.set_broker_stream(true);
        assert!(readiness.report().ready);
    }

    #[test]
    fn a_known_broker_problem_is_named_until_the_stream_is_up() {
        let readiness = Readiness::new(false);
        readiness.set_broker_problem("wrong port".to_owned());
        assert_eq!(
            readiness.report().reasons,
            ["the broker stream is not up: wrong port"]
        );
        readiness.set_broker_stream(true);
        assert!(readiness.report().ready);
        readiness.set_broker_stream(false);
        assert_eq!(readiness.report().reasons, ["the broker stream is not up"]);
    }

    #[test]
    fn missing_flux_apis_and_watch_errors_are_named() {
        let readiness = Readiness::new(true);
        readiness.set_broker_stream(true);
        readiness.set_flux_apis_missing(vec!["GitRepository".to_owned()]);
        let report = readiness.report();
        assert!(!report.ready);
        assert_eq!(report.reasons, ["the cluster does not serve GitRepository"]);
        readiness.set_flux_apis_missing(Vec::new());
        readiness.set_watches_synced(true);
        readiness.set_flux_apis_optional_missing(vec!["OCIRepository".to_owned()]);
        let report = readiness.report();
        assert!(report.ready, "{:?}", report.reasons);
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["kubernetes"]["flux_apis_optional_missing"],
            serde_json::json!(["OCIRepository"])
        );
        readiness.set_kubernetes_error(Some("watch failed".to_owned()));
        assert_eq!(readiness.report().reasons, ["Kubernetes: watch failed"]);
    }
}
