//! Delivery stops as a dispatcher describes them, their lifecycle, and the
//! commands that change a vehicle's route (and a fleet's zones).
//!
//! A stop goes `pending` → `next` (the first stop of the route still to be
//! reached) → `arrived` (inside its geofence and slow) → `completed` (with
//! optional proof of delivery) or `failed` (with a reason). A driver may
//! complete or fail a stop without the geofence ever seeing them there, and
//! may reach stops out of order; both are accepted as they happen.

use lastmile_roadgraph::LatLon;

use super::{StopId, VehicleId};
use crate::zones::{ZoneDef, ZoneId};

/// The promised time window of a stop (event time, seconds).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct TimeWindow {
    pub start: f64,
    pub end: f64,
}

/// A stop as planned by the dispatcher.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
pub struct StopPlan {
    pub id: StopId,
    pub pos: LatLon,
    pub window: Option<TimeWindow>,
    /// Expected time spent at the stop, seconds.
    pub service_s: f64,
    /// Boxed `str`: a stop's reference never grows, and `String`'s
    /// capacity word is 8 bytes on every stop of every vehicle.
    pub customer_ref: Option<Box<str>>,
}

impl StopPlan {
    pub fn new(id: StopId, pos: LatLon) -> Self {
        Self {
            id,
            pos,
            window: None,
            service_s: 0.0,
            customer_ref: None,
        }
    }
}

#[derive(
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
)]
#[repr(u8)]
pub enum StopStatus {
    #[default]
    Pending = 0,
    Next = 1,
    Arrived = 2,
    Completed = 3,
    Failed = 4,
}

impl StopStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Next => "next",
            Self::Arrived => "arrived",
            Self::Completed => "completed",
            Self::Failed => "failed",
        }
    }

    /// Still to be reached: ETAs are kept for these.
    pub fn is_remaining(self) -> bool {
        matches!(self, Self::Pending | Self::Next)
    }

    /// Completed or failed: nothing will change it any more.
    pub fn is_closed(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

/// Proof of delivery attached to a completed stop. References point to
/// wherever the platform keeps photos and signatures.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ProofOfDelivery {
    pub photo_refs: Vec<String>,
    pub signature_ref: Option<String>,
    pub note: Option<String>,
    /// Where the device says it was completed.
    pub pos: Option<LatLon>,
}

/// How a closed stop ended.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
pub enum StopOutcome {
    Completed(ProofOfDelivery),
    Failed { reason: String },
}

/// A customer's rating of a delivered stop: 1 to 5 stars and a comment,
/// given once, kept with the stop's outcome.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct Rating {
    pub stars: u8,
    pub comment: String,
    /// Event time it was given.
    pub time: f64,
}

impl Rating {
    /// Longest comment kept, in bytes.
    pub const MAX_COMMENT: usize = 1000;

    /// Whether it is a rating one can give: 1 to 5 stars, a comment of at
    /// most [`Rating::MAX_COMMENT`] bytes without control characters but
    /// line breaks.
    pub fn is_valid(&self) -> bool {
        (1..=5).contains(&self.stars)
            && self.comment.len() <= Self::MAX_COMMENT
            && !self
                .comment
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t')
    }
}

/// A change to routes and stops. Every command carries the event time it
/// was issued at, so replays give the same events.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
pub enum Command {
    /// Replaces the vehicle's open stops (closed ones stay in its history).
    AssignRoute {
        vehicle: VehicleId,
        stops: Vec<StopPlan>,
    },
    /// Inserts a stop at `index` among the vehicle's open stops (the end if
    /// `None` or past it).
    AddStop {
        vehicle: VehicleId,
        stop: StopPlan,
        index: Option<usize>,
    },
    RemoveStop {
        vehicle: VehicleId,
        stop: StopId,
    },
    /// New order of the vehicle's open stops; must name each exactly once.
    Reorder {
        vehicle: VehicleId,
        order: Vec<StopId>,
    },
    Complete {
        vehicle: VehicleId,
        stop: StopId,
        proof: ProofOfDelivery,
    },
    Fail {
        vehicle: VehicleId,
        stop: StopId,
        reason: String,
    },
    /// The customer rates a completed stop (once).
    Rate {
        vehicle: VehicleId,
        stop: StopId,
        rating: Rating,
    },
    /// A dispatcher's upkeep record for a vehicle: it was serviced (its
    /// service counts start again), and/or its odometer reads `odometer_m`
    /// (metres: the lifetime odometer is set to it and counts on).
    Upkeep {
        vehicle: VehicleId,
        serviced: bool,
        odometer_m: Option<f64>,
    },
    /// Adds zones to a fleet (the slot its vehicles carry, see
    /// [`super::fleet_zones`]), or replaces those of the same ids.
    PutZones {
        fleet: u32,
        zones: Vec<ZoneDef>,
    },
    /// Removes zones of a fleet: a vehicle inside one forgets it without
    /// an event (it did not move).
    RemoveZones {
        fleet: u32,
        zones: Vec<ZoneId>,
    },
}

impl Command {
    /// The vehicle it changes (`None`: a fleet's zones, every shard's).
    pub fn vehicle(&self) -> Option<VehicleId> {
        match self {
            Self::AssignRoute { vehicle, .. }
            | Self::AddStop { vehicle, .. }
            | Self::RemoveStop { vehicle, .. }
            | Self::Reorder { vehicle, .. }
            | Self::Complete { vehicle, .. }
            | Self::Fail { vehicle, .. }
            | Self::Rate { vehicle, .. }
            | Self::Upkeep { vehicle, .. } => Some(*vehicle),
            Self::PutZones { .. } | Self::RemoveZones { .. } => None,
        }
    }
}
