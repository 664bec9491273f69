//! Standing vehicles. A parked van's fixes jitter around one point; stepping
//! the HMM on each of them lets the chain follow the jitter along the street,
//! round corners and back. Instead, fixes that gather into a cluster (or come
//! with a reported speed of zero) are held: placed where the cluster's
//! centroid is, with no step of their own, and every so often a step is taken
//! at the centroid itself, a far better fix than any single one.

use lastmile_roadgraph::LatLon;
use lastmile_roadgraph::geo::haversine_m;

use super::window::Held;
use super::{Estimate, MatchOutput, Matcher, VehicleTrack};
use crate::ping::Ping;

/// What [`Matcher::hold`] decided for a ping.
pub(super) enum Hold {
    /// Standing still: placed with the newest step, no step of its own.
    Held,
    /// A step of its own, at the fix.
    Step,
    /// A step of its own, at a standing vehicle's centroid with this sigma.
    StepAt(LatLon, f64),
}

/// Running centroid of a standing vehicle's fixes.
#[derive(Clone, Copy, Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(super) struct Still {
    pub(super) lat: f64,
    pub(super) lon: f64,
    pub(super) n: f64,
    /// Consecutive fixes outside a settled cluster (one is tolerated).
    pub(super) strays: u8,
    /// Where the last held ping was placed live (edge, offset).
    pub(super) held_at: Option<(u32, f64)>,
}

impl Still {
    pub(super) fn new(p: LatLon) -> Self {
        Self {
            lat: p.lat,
            lon: p.lon,
            n: 1.0,
            strays: 0,
            held_at: None,
        }
    }

    pub(super) fn centroid(&self) -> LatLon {
        LatLon::new(self.lat / self.n, self.lon / self.n)
    }

    pub(super) fn add(&mut self, p: LatLon) {
        self.lat += p.lat;
        self.lon += p.lon;
        self.n += 1.0;
    }
}

impl Matcher<'_> {
    /// A ping of a vehicle that is standing still makes no step of its own.
    /// Standing is what the device says when it reports a speed; otherwise
    /// the fixes must gather: a fix within `standstill_sigmas` of the
    /// centroid of the recent fixes joins their cluster, and once a few have
    /// joined, any fix within three sigma does (a single stray one is
    /// tolerated). Held pings are placed where the cluster's centroid is:
    /// live, on the current edge; finalised, on the path to the next step,
    /// never backwards. Stepping on every jittering fix would let the chain
    /// follow the jitter along the street, round corners and back; Newson &
    /// Krumm and GraphHopper thin standing fixes too.
    pub(super) fn hold(
        &mut self,
        track: &mut VehicleTrack,
        ping: &Ping,
        seq: u64,
        sigma: f64,
        out: &mut MatchOutput,
    ) -> Hold {
        let (Some(last_time), Some(im)) =
            (track.window.back().map(|s| s.time), track.last_immediate)
        else {
            track.still = Some(Still::new(ping.pos));
            return Hold::Step;
        };
        let still = track.still.get_or_insert(Still::new(ping.pos));
        let off = haversine_m(still.centroid(), ping.pos);
        let settled = still.n >= SETTLED_FIXES;
        let radius = if settled {
            SETTLED_SIGMAS
        } else {
            self.config.standstill_sigmas
        } * sigma;
        let member = match ping.valid_speed() {
            Some(v) => v < STANDING_SPEED_MPS && off <= SETTLED_SIGMAS * sigma,
            None => off <= radius,
        };
        if member {
            still.add(ping.pos);
            still.strays = 0;
        } else if settled && still.strays == 0 && ping.valid_speed().is_none() {
            still.strays = 1;
        } else {
            track.still = Some(Still::new(ping.pos));
            return Hold::Step;
        }
        if still.n < FORMED_FIXES {
            return Hold::Step;
        }
        if ping.time - last_time > self.config.standstill_max_s {
            // A periodic step keeps the chain alive; the centroid of the
            // cluster is a far better fix than this one.
            let n = still.n;
            return Hold::StepAt(
                still.centroid(),
                (sigma / n.sqrt()).max(MIN_CENTROID_SIGMA_M),
            );
        }
        let centroid = still.centroid();
        let len = self.graph.length_m(im.edge);
        let (mut offset, _) = self.graph.project_onto_edge(im.edge, centroid, 0.0, len);
        // The live position of a standing vehicle never steps back.
        if let Some((e, o)) = still.held_at
            && e == im.edge
        {
            offset = offset.max(o);
        }
        still.held_at = Some((im.edge, offset));
        out.immediate = Estimate {
            seq,
            time: ping.time,
            offset_m: offset,
            point: self.graph.point_on_edge(im.edge, offset),
            ..im
        };
        // Finalised with the next step, placed on the path towards it.
        if let Some(step) = track.window.back() {
            track.held.push_back(Held {
                step: step.seq,
                seq,
                time: ping.time,
                pos: centroid,
            });
        }
        Hold::Held
    }
}

/// The centroid of many fixes is not trusted beyond this (road geometry is
/// not that exact either).
const MIN_CENTROID_SIGMA_M: f64 = 2.0;
/// A cluster of this many fixes holds the next ones ...
const FORMED_FIXES: f64 = 3.0;
/// ... and from this many on it is settled ...
const SETTLED_FIXES: f64 = 5.0;
/// ... taking any fix within this many sigma of its centroid.
const SETTLED_SIGMAS: f64 = 3.0;
/// A device reporting at least this speed is not standing still, wherever its fixes are.
const STANDING_SPEED_MPS: f64 = 1.0;
