//! A vehicle's upkeep: its lifetime odometer (metres of finalised matched
//! path, never the sum of GPS jumps) and moving time, kept across days and
//! restarts, what it drove since its last service, and `service_due` once
//! its fleet's service interval is reached.
//!
//! A fleet's interval counts metres driven, hours moving and calendar days
//! (any of them; the first reached makes the service due). The counts
//! start at the vehicle's last service ([`Command::Upkeep`](super::Command)
//! with `serviced`), or, before one was recorded, when it was first seen.
//! `service_due` is told once per service cycle: the next comes after the
//! next service.
//!
//! Where the matched path breaks (a silence longer than the matcher's gap,
//! a chain restarted after outliers), the metres in between are no piece
//! of it: they are bridged by the shortest road route between where the
//! path ended and where it begins again, when a vehicle could have driven
//! it in the time (a phone off through a tunnel would otherwise lose the
//! tunnel from the odometer).

use lastmile_roadgraph::geo::haversine_m;
use lastmile_roadgraph::{EdgePos, Graph, Router};

use crate::matcher::Traversal;

/// The highest odometer reading a dispatcher may record (10 million km:
/// no road vehicle drives that far).
pub const MAX_ODOMETER_M: f64 = 1e10;

/// No vehicle bridges a break faster than this (m/s; the matcher's bound).
const BRIDGE_MAX_SPEED_MPS: f64 = 60.0;
/// Breaks shorter than this (as the crow flies) are bridged straight: a
/// route between places that close may turn round the block.
const BRIDGE_DIRECT_M: f64 = 30.0;

/// Where the matched path last ended.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq)]
pub struct PathEnd {
    edge: u32,
    at_m: f32,
    time: f64,
}

/// The road metres from where the path ended to where `next` begins: 0 when
/// it goes on from there (consecutive pieces of a chain are connected), the
/// shortest route's when it begins elsewhere (the straight line's when
/// close, or when the route is a detour), and 0 when no vehicle could have
/// got there in the time.
pub fn bridge(router: &mut Router, g: &Graph, end: Option<PathEnd>, next: &Traversal) -> f64 {
    let Some(end) = end else {
        return 0.0;
    };
    let at = f64::from(end.at_m);
    let same_place = end.edge == next.edge && (next.from_m - at).abs() < 1.0;
    let next_edge = next.from_m < 1.0 && at >= g.length_m(end.edge) - 1.0;
    if same_place || next_edge {
        return 0.0;
    }
    let from = EdgePos {
        edge: end.edge,
        offset_m: at,
    };
    let to = EdgePos {
        edge: next.edge,
        offset_m: next.from_m,
    };
    let dt = (next.t_start - end.time).max(0.0);
    let straight = haversine_m(
        g.point_on_edge(from.edge, from.offset_m),
        g.point_on_edge(to.edge, to.offset_m),
    );
    if straight > BRIDGE_MAX_SPEED_MPS * dt + 100.0 {
        return 0.0;
    }
    if straight < BRIDGE_DIRECT_M {
        return straight;
    }
    // A route far longer than the crow flies is a turn round the block to
    // a place just behind (a restarted chain begins a little back), not a
    // way driven: the straight line is then the better guess.
    match router.route(&[from], &[to]) {
        Some(r) if r.distance_m <= 2.0 * straight + 100.0 => r.distance_m,
        _ => straight,
    }
}

/// When a fleet's vehicles are due for service (each `None`: not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ServiceInterval {
    pub distance_m: Option<f64>,
    pub moving_s: Option<f64>,
    pub calendar_s: Option<f64>,
}

/// Which intervals are reached: the bits of `service_due`'s reference and
/// of the snapshot's [`ServiceState::due`].
pub const DUE_DISTANCE: u8 = 1;
pub const DUE_MOVING: u8 = 2;
pub const DUE_CALENDAR: u8 = 4;

impl ServiceInterval {
    /// Which of its intervals `since` has reached at `now`.
    fn reached(&self, since: &ServiceState, now: f64) -> u8 {
        let over = |limit: Option<f64>, count: f64| limit.is_some_and(|l| count >= l);
        let mut due = 0;
        if over(self.distance_m, since.driven_m) {
            due |= DUE_DISTANCE;
        }
        if over(self.moving_s, since.moving_s) {
            due |= DUE_MOVING;
        }
        if over(self.calendar_s, now - since.since) {
            due |= DUE_CALENDAR;
        }
        due
    }
}

/// What a vehicle did since its last service, as its snapshot shows it.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq, Default,
)]
pub struct ServiceState {
    /// Event time of the last service, or when the vehicle was first seen
    /// (NaN: neither yet).
    pub since: f64,
    /// Metres of matched path and seconds moving since then.
    pub driven_m: f64,
    pub moving_s: f64,
    /// The intervals reached ([`DUE_DISTANCE`] | [`DUE_MOVING`] |
    /// [`DUE_CALENDAR`]; 0: not due).
    pub due: u8,
}

/// One vehicle's counters.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq)]
pub struct Upkeep {
    /// Metres of matched path and seconds moving since the vehicle was
    /// first seen (or its odometer was set).
    pub lifetime_m: f64,
    pub moving_s: f64,
    pub service: ServiceState,
    /// Where the matched path last ended (for [`bridge`]).
    pub path_end: Option<PathEnd>,
}

impl Default for Upkeep {
    fn default() -> Self {
        Self {
            lifetime_m: 0.0,
            moving_s: 0.0,
            path_end: None,
            service: ServiceState {
                since: f64::NAN,
                ..ServiceState::default()
            },
        }
    }
}

impl Upkeep {
    /// The vehicle is seen at `now`: the service counts start then if
    /// nothing started them before.
    pub fn seen(&mut self, now: f64) {
        if self.service.since.is_nan() {
            self.service.since = now;
        }
    }

    /// The matched path now ends where `piece` ends.
    pub fn ended(&mut self, piece: &Traversal) {
        self.path_end = Some(PathEnd {
            edge: piece.edge,
            at_m: piece.to_m as f32,
            time: piece.t_end,
        });
    }

    /// Metres of matched path driven.
    pub fn drove(&mut self, m: f64) {
        self.lifetime_m += m;
        self.service.driven_m += m;
    }

    /// Seconds spent moving.
    pub fn moved(&mut self, s: f64) {
        self.moving_s += s;
        self.service.moving_s += s;
    }

    /// A dispatcher's record: the vehicle's odometer reads `odometer_m`
    /// (metres driven since the service count are kept), and/or it was
    /// serviced at `now` (the counts start again, not due).
    pub fn record(&mut self, now: f64, serviced: bool, odometer_m: Option<f64>) {
        if let Some(m) = odometer_m {
            self.lifetime_m = m;
        }
        if serviced {
            self.service = ServiceState {
                since: now,
                ..ServiceState::default()
            };
        }
    }

    /// Judges `interval` at `now`: the intervals reached when the service
    /// has just become due (told once per service cycle), else `None`.
    pub fn judge(&mut self, interval: &ServiceInterval, now: f64) -> Option<u8> {
        if self.service.due != 0 || self.service.since.is_nan() {
            return None;
        }
        self.service.due = interval.reached(&self.service, now);
        (self.service.due != 0).then_some(self.service.due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY_10_KM: ServiceInterval = ServiceInterval {
        distance_m: Some(10_000.0),
        moving_s: None,
        calendar_s: None,
    };

    #[test]
    fn due_once_per_cycle_from_the_first_sighting_then_from_the_service() {
        let mut u = Upkeep::default();
        u.drove(5_000.0);
        assert_eq!(
            u.judge(&EVERY_10_KM, 0.0),
            None,
            "never seen: nothing counts from"
        );
        u.seen(100.0);
        u.seen(200.0);
        assert_eq!(u.service.since, 100.0);
        u.drove(4_999.0);
        assert_eq!(u.judge(&EVERY_10_KM, 300.0), None);
        u.drove(1.0);
        assert_eq!(u.judge(&EVERY_10_KM, 400.0), Some(DUE_DISTANCE));
        u.drove(5_000.0);
        assert_eq!(u.judge(&EVERY_10_KM, 500.0), None, "told once");
        assert_eq!(u.service.due, DUE_DISTANCE, "still due");
        u.record(600.0, true, None);
        assert_eq!(
            (u.service.due, u.service.driven_m, u.service.since),
            (0, 0.0, 600.0)
        );
        assert_eq!(u.lifetime_m, 15_000.0, "the lifetime odometer goes on");
        u.drove(10_000.0);
        assert_eq!(u.judge(&EVERY_10_KM, 700.0), Some(DUE_DISTANCE));
    }

    #[test]
    fn moving_hours_and_calendar_days_count_as_well() {
        let interval = ServiceInterval {
            distance_m: None,
            moving_s: Some(3_600.0),
            calendar_s: Some(86_400.0),
        };
        let mut u = Upkeep::default();
        u.seen(0.0);
        u.moved(3_599.0);
        assert_eq!(u.judge(&interval, 86_399.0), None);
        u.moved(1.0);
        assert_eq!(
            u.judge(&interval, 86_400.0),
            Some(DUE_MOVING | DUE_CALENDAR)
        );
        let mut idle = Upkeep::default();
        idle.seen(0.0);
        assert_eq!(idle.judge(&interval, 86_400.0), Some(DUE_CALENDAR));
    }

    #[test]
    fn setting_the_odometer_keeps_the_service_count() {
        let mut u = Upkeep::default();
        u.seen(0.0);
        u.drove(1_000.0);
        u.record(10.0, false, Some(80_000_000.0));
        assert_eq!(u.lifetime_m, 80_000_000.0);
        assert_eq!(u.service.driven_m, 1_000.0);
        assert_eq!(u.service.since, 0.0);
    }
}
