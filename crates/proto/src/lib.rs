//! Wire types for fluxgate's gRPC APIs and the GitLab KAS APIs it serves, generated from
//! `proto/` at build time.
//!
//! Client stubs are behind the `client` feature (the agent), server stubs behind `server`
//! (the broker). Nothing outside the edge of a service should use these types: convert
//! them to `fluxgate-core` domain types where they are received.

pub mod codec;
pub mod outbound;

pub use prost;
pub use prost_types;
pub use tonic;

/// The native agent API (`fluxgate.v1`).
pub mod v1 {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("fluxgate.v1");
}

/// The broker's `fluxgate.v1.AgentService` server, whose responses are
/// [`outbound::OutboundMessage`]s (an event encoded once, written to every stream).
pub mod v1_outbound {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    include!(concat!(env!("OUT_DIR"), "/outbound/fluxgate.v1.rs"));
}

/// GitLab KAS's APIs, wire-compatible with GitLab Rails and agentk (package names,
/// services and field numbers as in gitlab-agent). KAS validates them with
/// protoc-gen-validate; fluxgate validates by hand where they are received.
pub mod gitlab {
    /// `gitlab.agent.*`
    pub mod agent {
        /// `gitlab.agent.event`: the push notice Rails sends.
        pub mod event {
            #![allow(clippy::all, missing_docs, rust_2018_idioms)]
            tonic::include_proto!("gitlab.agent.event");
        }
        /// `gitlab.agent.notifications.rpc`: `Notifications/GitPushEvent` (Rails → KAS).
        pub mod notifications {
            /// The service and its messages.
            pub mod rpc {
                #![allow(clippy::all, missing_docs, rust_2018_idioms)]
                tonic::include_proto!("gitlab.agent.notifications.rpc");
            }
        }
        /// `gitlab.agent.flux.rpc`: `GitLabFlux/ReconcileProjects` (agentk → KAS).
        pub mod flux {
            /// The service and its messages.
            pub mod rpc {
                #![allow(clippy::all, missing_docs, rust_2018_idioms)]
                tonic::include_proto!("gitlab.agent.flux.rpc");
            }
        }
    }
}
