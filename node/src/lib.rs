//! `lastmile-node` holds what every front end of one lastmile node shares,
//! so that the QUIC side (`lastmile-ingest`) and the HTTP side serve the
//! same fleets the same way and never depend on each other:
//! `lastmile.toml` ([`config`]), the driver apps' devices ([`devices`]),
//! webhook endpoints ([`endpoints`]), tokens, roles and fleets ([`auth`]), the
//! names fleets give their vehicles and stops ([`ids`]), the durable store
//! ([`store`]) and the recovery and checkpoints built on it ([`durable`]),
//! the event-time clock ([`clock`]), the memory bound ([`memory`]), the
//! node's part in a cluster ([`cluster`]),
//! the rules every ping keeps at every door and its hand-over to the
//! engine ([`admit`]), late positions placed in the history
//! ([`backfill`]), where accepted pings go ([`sink`]), the zones fleets draw
//! as GeoJSON ([`zone_file`]) and keep ([`zone_admin`]), and the node that
//! holds them all with the threads that drive the engine ([`runtime`]).

pub mod admit;
pub mod auth;
pub mod backfill;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod devices;
pub mod dispatch;
pub mod durable;
pub mod endpoints;
pub mod event_json;
pub mod guard;
pub mod history;
pub mod ids;
pub mod memory;
pub mod runtime;
pub mod sink;
pub mod store;
pub mod zone_admin;
pub mod zone_file;

pub use auth::Role;
pub use runtime::{Node, Running};
