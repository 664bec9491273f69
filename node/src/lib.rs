//! `lastmile-node` holds what every front end of one lastmile node shares,
//! so that the QUIC side (`lastmile-ingest`) and the HTTP side serve the
//! same fleets the same way and never depend on each other:
//! `lastmile.toml` ([`config`]), tokens, roles and fleets ([`auth`]), the
//! names fleets give their vehicles and stops ([`ids`]), the durable store
//! ([`store`]) and the recovery and checkpoints built on it ([`durable`]),
//! the event-time clock ([`clock`]), the memory bound ([`memory`]), and
//! where accepted pings go ([`sink`]).

pub mod auth;
pub mod clock;
pub mod config;
pub mod durable;
pub mod ids;
pub mod memory;
pub mod sink;
pub mod store;

pub use auth::Role;
