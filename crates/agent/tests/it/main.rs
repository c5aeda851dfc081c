//! Integration tests of fluxgate-agent over real sockets: Receiver calls against the Flux
//! Receiver stand-in (`fluxgate-e2e`), and the broker stream against a fake broker built
//! on the generated server stub. One test binary, so the harness links once.

mod binary;
mod delivery;
mod deploy_config;
mod fake_broker;
mod kubernetes;
mod stream;
mod support;
