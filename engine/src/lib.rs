//! `lastmile-engine` owns the sans-IO tracking core (see `../shared/DESIGN.md`):
//! the online map matcher ([`matcher`]), and the tools that prove it — the
//! trace format ([`trace`]), the trace simulator ([`simulate`]) and the
//! accuracy evaluation ([`evaluate`]). Shards, vehicle/route/stop state, ETAs,
//! traffic learning, detectors and the live-vehicle index come next.
//!
//! Nothing here opens a file, a socket or reads the wall clock: inputs are
//! pings with event times, readers and writers are passed in, so a replay of
//! the same input gives the same output bit for bit.

pub mod evaluate;
pub mod kubicka;
pub mod matcher;
pub mod ping;
pub mod simulate;
pub mod trace;

pub use matcher::{
    Estimate, FinalPoint, MatchOutput, MatchStatus, Matcher, MatcherConfig, MatcherStats,
    Traversal, VehicleTrack,
};
pub use ping::Ping;
