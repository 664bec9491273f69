//! What queries read without entering a shard: each vehicle's latest state
//! (position, motion, next stop, every remaining stop's ETA), written by its
//! shard after each ping, command or tick, in place (no allocation once a
//! vehicle's entry exists).
//!
//! Each vehicle's snapshot is a cell of its own, entered in the table by id
//! once, when the vehicle first appears. The shard keeps its vehicles'
//! cells beside them and writes through them: a ping costs one uncontended
//! lock of that vehicle's cell, not a lookup in a map both shards write
//! (whose locks and buckets would bounce between their cores).

use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;
use lastmile_roadgraph::LatLon;

use super::stops::StopStatus;
use super::upkeep::ServiceState;
use super::{StopId, VehicleId};
use crate::MatchStatus;
use crate::live_index::LivePosition;
use crate::zones::ZoneId;

/// One vehicle's published state.
pub(crate) type SnapshotCell = Arc<Mutex<VehicleSnapshot>>;

/// Every vehicle's cell, by id.
pub(crate) type SnapshotTable = DashMap<VehicleId, SnapshotCell>;

/// Locks a cell; a writer that panicked left a whole snapshot behind (they
/// are filled field by field from a consistent vehicle), so poisoning is
/// ignored.
pub(crate) fn read(cell: &Mutex<VehicleSnapshot>) -> MutexGuard<'_, VehicleSnapshot> {
    cell.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether a remaining stop's ETA could be computed.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[repr(u8)]
pub enum EtaState {
    /// Not computed yet: the vehicle was never placed on a road, or an
    /// earlier stop of the route is unreachable.
    #[default]
    Unknown = 0,
    /// Computed: `eta` holds it.
    Known = 1,
    /// No road leads there: from the vehicle for its next stop, from the
    /// stop before it for the others (a stop on a road the main network
    /// does not reach, or the vehicle in a dead end the map cut off).
    Unreachable = 2,
}

impl EtaState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Known => "known",
            Self::Unreachable => "unreachable",
        }
    }
}

/// One stop as the vehicle's snapshot shows it.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct StopEta {
    pub stop: StopId,
    pub status: StopStatus,
    /// Expected arrival (event time, s) for a remaining stop, the arrival
    /// time for an arrived or closed one; NaN unless `eta_state` is known
    /// (or the stop was reached).
    pub eta: f64,
    /// The arrival window: the stop is reached before `eta_p10` one time in
    /// ten and after `eta_p90` one time in ten (`eta` is the P50). Equal to
    /// `eta` for a reached stop; NaN when `eta` is.
    pub eta_p10: f64,
    pub eta_p90: f64,
    /// Whether a remaining stop's `eta` could be computed, and why not.
    pub eta_state: EtaState,
    /// How far the stop's coordinates lie from the road it was snapped
    /// to, metres, and that road's component (0: the main network): a
    /// far or isolated snap is a bad address a dispatcher should see.
    pub snap_m: f32,
    pub snap_component: u32,
    /// Road metres still to drive to it (0 once arrived; NaN unknown).
    pub remaining_m: f64,
    /// Remaining stops the vehicle serves before this one.
    pub stops_before: u32,
    /// The ETA is past the promised window.
    pub late: bool,
    /// The promised window is likely to be missed (`at_risk` was raised
    /// and not cleared).
    pub at_risk: bool,
    pub window_end: f64,
}

/// A vehicle's latest state (rkyv: a cluster node asks the owner for it).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
pub struct VehicleSnapshot {
    pub vehicle: VehicleId,
    /// Event time of the last ping taken (of any status).
    pub time: f64,
    /// Status of the last ping.
    pub status: MatchStatus,
    /// Last matched position (NaN before the first match).
    pub pos: LatLon,
    pub edge: u32,
    pub offset_m: f64,
    /// Time of the last matched position.
    pub matched_time: f64,
    pub speed_mps: f64,
    /// Degrees clockwise from north (NaN unknown).
    pub heading_deg: f64,
    pub moving: bool,
    pub online: bool,
    /// Metres driven on the matched path since the start of the (UTC) day.
    pub odometer_m: f64,
    /// Metres of matched path, and seconds moving, since the vehicle was
    /// first seen (across days and restarts).
    pub lifetime_m: f64,
    pub moving_s: f64,
    /// What it did since its last service, and whether that is due.
    pub service: ServiceState,
    /// The fleet's zones it is inside, and since when.
    pub zones: Vec<(ZoneId, f64)>,
    pub next_stop: Option<StopId>,
    pub off_route: bool,
    /// Standing still away from any stop with one due (since the `stalled`
    /// event, until it moves).
    pub stalled: bool,
    /// The vehicle's stops in route order: closed ones it still holds, then
    /// the arrived and remaining ones.
    pub stops: Vec<StopEta>,
}

impl VehicleSnapshot {
    pub fn new(vehicle: VehicleId) -> Self {
        Self {
            vehicle,
            time: f64::NAN,
            status: MatchStatus::Invalid,
            pos: LatLon::new(f64::NAN, f64::NAN),
            edge: u32::MAX,
            offset_m: 0.0,
            matched_time: f64::NAN,
            speed_mps: 0.0,
            heading_deg: f64::NAN,
            moving: false,
            online: false,
            odometer_m: 0.0,
            lifetime_m: 0.0,
            moving_s: 0.0,
            service: ServiceState {
                since: f64::NAN,
                ..ServiceState::default()
            },
            zones: Vec::new(),
            next_stop: None,
            off_route: false,
            stalled: false,
            stops: Vec::new(),
        }
    }

    pub fn stop(&self, id: StopId) -> Option<&StopEta> {
        self.stops.iter().find(|s| s.stop == id)
    }

    /// Where the live-vehicle index puts the vehicle, once it was matched.
    pub fn live_position(&self) -> Option<LivePosition> {
        (self.pos.is_valid() && self.matched_time.is_finite()).then_some(LivePosition {
            time: self.matched_time,
            pos: self.pos,
            edge: self.edge,
            offset_m: self.offset_m,
            speed_mps: self.speed_mps as f32,
        })
    }
}
