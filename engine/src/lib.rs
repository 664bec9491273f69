//! `lastmile-engine` owns the sans-IO tracking core (see `../shared/DESIGN.md`):
//! the online map matcher ([`matcher`]), and the tools that prove it — the
//! trace format ([`trace`]), the trace simulator ([`simulate`]) and the
//! accuracy evaluation ([`evaluate`]); live traffic learnt from the matched
//! paths ([`traffic`]); the live-vehicle index ([`live_index`]); and the live
//! fleet ([`fleet`]): shards owning vehicles, routes and stops, incremental
//! ETAs, traffic-learnt metrics and the exception detectors and their events.
//!
//! Nothing here opens a file, a socket or reads the wall clock: inputs are
//! pings with event times, readers and writers are passed in, so a replay of
//! the same input gives the same output bit for bit.

pub mod bench;
pub mod calibrate;
pub mod eta_score;
pub mod evaluate;
pub mod fleet;
pub mod foretold;
pub mod kubicka;
pub mod live_index;
pub mod matcher;
pub mod ping;
pub mod simulate;
pub mod time;
pub mod trace;
pub mod traffic;
pub mod trip_eval;
pub mod trips;
pub mod zones;

pub use matcher::{
    Estimate, FinalPoint, MatchOutput, MatchStatus, Matcher, MatcherConfig, MatcherStats,
    Traversal, VehicleTrack,
};
pub use ping::Ping;
