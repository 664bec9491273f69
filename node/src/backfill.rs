//! Positions that arrive late — a phone's offline buffer uploaded after
//! newer positions got through — placed in the vehicle's history without
//! touching its live state. The live matcher only moves forward in time,
//! so such a stretch is matched on its own, by a matcher of its own with
//! the engine's settings, and its path written into the history where the
//! live path has a gap (`lastmile_node::devices`, `Device::fill_gaps`). The
//! vehicle's position, ETAs, detectors and events are the live path's, as
//! they were when the positions should have come.

use std::sync::Mutex;

use lastmile_engine::Ping;
use lastmile_engine::fleet::{PathPiece, VehicleId};
use lastmile_engine::matcher::{MatchOutput, Matcher, VehicleTrack};

use crate::runtime::Node;

/// One stretch at a time: a matcher holds search space the size of the
/// graph, and late stretches are rare.
#[derive(Default)]
pub struct Backfill {
    busy: Mutex<()>,
}

impl Node {
    /// Matches `pings` (one vehicle's, oldest first) on their own and
    /// writes their path into its history (the store's, or a cluster's);
    /// returns the pieces written (0 without an engine, or neither a store
    /// nor a cluster). Blocks: call it off the async threads.
    pub fn backfill(&self, vehicle: VehicleId, pings: &[Ping]) -> anyhow::Result<usize> {
        let Some(e) = self.sink.engine() else {
            return Ok(0);
        };
        if self.durable.is_none() && self.cluster.get().is_none() {
            return Ok(0);
        }
        let _one = self.backfill.busy.lock().unwrap_or_else(|p| p.into_inner());
        let mut matcher = Matcher::new(e.graph(), e.config().matcher.clone());
        let (mut track, mut out) = (VehicleTrack::new(), MatchOutput::default());
        let mut pieces = Vec::new();
        let mut keep = |out: &MatchOutput| {
            pieces.extend(out.path.iter().map(|t| PathPiece {
                vehicle,
                edge: t.edge,
                from_m: t.from_m,
                to_m: t.to_m,
                t_start: t.t_start,
                t_end: t.t_end,
            }));
        };
        for p in pings {
            matcher.push(&mut track, p, &mut out);
            keep(&out);
        }
        matcher.flush(&mut track, &mut out);
        keep(&out);
        let n = pieces.len();
        match (&self.durable, self.cluster.get()) {
            (Some(d), _) => d.store.insert_history(vehicle, &pieces)?,
            (None, Some(member)) => member.insert_history(pieces)?,
            (None, None) => {}
        }
        Ok(n)
    }
}
