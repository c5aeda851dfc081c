//! End-to-end test harness for fluxgate: boots the real binaries, with stand-ins for what
//! cannot run here (Flux, Kubernetes, GitLab's OIDC side, GitLab Rails' calls to KAS:
//! [`kas_client`]); and a headless Chromium driven over the DevTools Protocol ([`cdp`]).

pub mod cdp;
pub mod flux_receiver;
pub mod gitlab_oidc;
pub mod harness;
pub mod kas_client;
pub mod kube_api;
pub mod kustomize;
