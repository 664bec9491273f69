//! lastmile on more than one machine, on NATS JetStream (issue 39): the
//! pieces of the clustered mode, each on the log rather than on a
//! home-made protocol. So far the partitioned ping log ([`ping_log`]);
//! partition ownership, state that moves and queries from any node build
//! on it.

pub mod ping_log;

pub use ping_log::{LogConfig, PingLog, Stored};
