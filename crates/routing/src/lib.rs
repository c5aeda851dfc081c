//! Routing: which local subscribers may see an event.
//!
//! [`RoutingState`] is the replica's view of the catalog and of agent policies, folded from
//! the log; [`access::may_see`] is the access rule; [`SubscriptionIndex`] finds the
//! subscribers of an event and applies the rule to each; [`explain`] says why an agent
//! would or would not get a push, and whether a subscription can ever match. The crate
//! does no I/O, so the same decisions are made for live events and for a reconnecting
//! agent's backlog.

pub mod access;
pub mod catalog;
pub mod explain;
pub mod index;
pub mod state;
pub mod subscription;

pub use access::{AccessDecision, decide, may_see};
pub use catalog::{Catalog, ProjectView};
pub use index::{
    AcceptedKinds, Match, SubscriberId, SubscriptionIndex, SubscriptionSet, route_one,
};
pub use state::{AgentEffect, RoutingState};
pub use subscription::Subscription;
