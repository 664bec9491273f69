//! `lastmile-ingest` is the QUIC front end of lastmile: the wire protocol
//! codec ([`protocol`], specified in PROTOCOL.md), authentication and
//! scope ([`auth`]), TLS set-up and certificate pinning ([`tls`]), the
//! server behind `lastmile serve` ([`server`]) with its backpressure onto
//! the engine's queues, and the async client ([`client`]) behind `lastmile
//! replay`, `eta`, `watch` and the route commands ([`replay`]).
//!
//! It holds no tracking logic: pings, commands and queries are decoded,
//! checked against the caller's token and handed to
//! `lastmile_engine::fleet::Engine`, and its answers are encoded back.

pub mod auth;
pub mod client;
pub mod config;
pub mod convert;
pub mod ids;
pub mod io;
pub mod priority;
pub mod protocol;
pub mod replay;
pub mod server;
pub mod store;
pub mod tls;

/// The QUIC implementation, for callers that need its connection types.
pub use quinn;
