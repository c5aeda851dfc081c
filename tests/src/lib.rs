//! End-to-end test harness for fluxgate: boots the real binaries, with stand-ins for what
//! cannot run here (GitLab Rails' calls to KAS: [`kas_client`]).

pub mod flux_receiver;
pub mod harness;
pub mod kas_client;
pub mod kube_api;
pub mod kustomize;
