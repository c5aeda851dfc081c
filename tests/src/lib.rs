//! End-to-end test harness for fluxgate: boots the real binaries, with stand-ins for what
//! cannot run here.

pub mod flux_receiver;
pub mod harness;
pub mod kube_api;
pub mod kustomize;
