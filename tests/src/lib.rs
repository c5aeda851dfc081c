//! End-to-end test harness for fluxgate: boots the real binaries, with stand-ins for what
//! cannot run here (Flux, Kubernetes, GitLab's OIDC side).

pub mod flux_receiver;
pub mod gitlab_oidc;
pub mod harness;
pub mod kube_api;
pub mod kustomize;
