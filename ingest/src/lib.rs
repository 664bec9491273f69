//! `lastmile-ingest` is the QUIC front end of lastmile: the wire protocol
//! codec ([`protocol`], specified in PROTOCOL.md), TLS set-up and
//! certificate pinning ([`tls`]), the server behind `lastmile serve`
//! ([`server`]) with its backpressure onto the engine's queues, and the
//! async client ([`client`]) behind `lastmile replay`, `eta`, `watch` and
//! the route commands ([`replay`]). What it shares with the other front
//! ends (configuration, tokens and fleets, names, the store) is
//! `lastmile-node`'s, re-exported here under the same paths.
//!
//! It holds no tracking logic: pings, commands and queries are decoded,
//! checked against the caller's token and handed to
//! `lastmile_engine::fleet::Engine`, and its answers are encoded back.

pub mod client;
pub mod convert;
pub mod io;
pub mod priority;
pub mod protocol;
pub mod replay;
pub mod server;
pub mod tls;

pub use lastmile_node::{auth, config, ids, store};

/// The QUIC implementation, for callers that need its connection types.
pub use quinn;
