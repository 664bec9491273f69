//! Events (what the detectors found) and the bounded fan-out subscribers read
//! them from.
//!
//! The bus is one ring of the most recent events, each with a global id in
//! publication order. Shards publish a batch at a time (one lock per batch,
//! not per event); subscribers keep a cursor (the next id they want) and
//! read at their own pace. A subscriber that falls behind by more than the
//! ring's capacity loses the oldest events and is told how many: the shards
//! never wait for anyone.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use lastmile_roadgraph::LatLon;

use super::{StopId, VehicleId};
use crate::zones::ZoneId;

/// What happened. The two figures of an [`Event`] (`value`, `reference`)
/// mean, per kind:
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    rkyv::Archive,
    rkyv::Serialize,
    rkyv::Deserialize,
)]
#[repr(u8)]
pub enum EventKind {
    /// The stop's ETA moved by more than the threshold: new ETA, ETA last announced.
    EtaChanged = 1,
    /// The stop's ETA is past its window end: ETA, window end.
    Late = 2,
    /// A late stop's ETA is back inside its window (with margin): ETA, window end.
    BackOnTime = 3,
    /// The vehicle left the planned path to its next stop on a slower way: the detour's cost so far s, threshold s.
    OffRoute = 4,
    /// Back on the planned path (or arrived): seconds it was off, 0.
    BackOnRoute = 5,
    /// Inside the stop's geofence and slow: distance to the stop m, geofence radius m.
    Arrived = 6,
    /// Left the geofence of a stop it had arrived at: dwell seconds, departure radius m.
    Departed = 7,
    /// The stop was completed (proof of delivery in the stop record): distance m from the stop (NaN unknown), dwell s (NaN if never arrived).
    Completed = 8,
    /// The stop failed (reason in the stop record): distance m, dwell s, as for completed.
    Failed = 9,
    /// Not moving for a while with a stop due: seconds stationary, threshold seconds.
    Stalled = 10,
    /// Above the road's legal limit by more than the margin for long enough: top speed m/s, limit m/s.
    Speeding = 11,
    /// Deceleration above the threshold: m/s², threshold m/s².
    HarshBraking = 12,
    /// No ping for the configured time: seconds since the last ping, threshold seconds.
    Offline = 13,
    /// Pings again after being offline: seconds of silence, 0.
    Online = 14,
    /// The matcher rejected a fix far from the vehicle: metres from its last position, the minimum distance reported.
    GpsOutlier = 15,
    /// No road leads to a remaining stop (from the vehicle, or from the stop
    /// before it): a bad address, an island, a van in a dead end the map cut
    /// off. Once per time it becomes so: metres from the stop's coordinates
    /// to the road it was snapped to, that road's component (0: the main network).
    StopUnreachable = 16,
    /// The customer rated a delivered stop (the comment is in the stop
    /// record): stars 1–5, NaN.
    Rated = 17,
    /// Customer milestone: the vehicle is under way with the stop on its
    /// route (see [`super::milestones`]): ETA (NaN unknown), remaining
    /// stops before this one.
    OutForDelivery = 18,
    /// Customer milestone: the stop is the vehicle's next: ETA, metres to go.
    NextStop = 19,
    /// Customer milestone: the stop's ETA is under the threshold (or the
    /// vehicle is there): ETA, threshold s.
    Arriving = 20,
    /// Customer milestone: the stop was completed (proof of delivery in the
    /// stop record): as for completed.
    Delivered = 21,
    /// Customer milestone: the stop failed (reason in the stop record): as
    /// for failed.
    FailedAttempt = 22,
    /// Customer milestone: the dispatcher changed the stop's promised
    /// window, and a new attempt begins: new window start, new window end
    /// (NaN: no window).
    Rescheduled = 23,
    /// The stop's promised window is likely to be missed: the probability
    /// (from the learnt arrival distribution, see [`super::window`]) that it
    /// is reached after the window's end went above `[detect] at_risk`:
    /// that probability, window end. Before `late`, which says the P50
    /// itself is past the end.
    AtRisk = 24,
    /// An at-risk stop's probability of missing its window fell below
    /// `[detect] at_risk_clear`: that probability, window end.
    RiskCleared = 25,
    /// The vehicle entered one of its fleet's zones (the event's `zone`).
    /// Judged on its matched positions: once `[detect] zone_positions`
    /// positions in a row were `zone_margin_m` inside the border: when the
    /// first of them was (event time, s), seconds from then to this event.
    ZoneEntered = 26,
    /// The vehicle left a zone (as many positions the margin outside it):
    /// when the first of them was, seconds it was inside until then.
    ZoneLeft = 27,
    /// The vehicle has been inside a zone for the zone's dwell time: when
    /// it entered, seconds inside so far.
    ZoneDwell = 28,
    /// The vehicle entered a zone of kind `forbidden`: when it entered, 0.
    ForbiddenZone = 29,
    /// The vehicle is inside none of its fleet's `allowed` zones (the one
    /// it just left, if any, is the event's zone): since when, 0.
    OutsideArea = 30,
    /// Above the lowest `speed_limit_kmh` of the zones it is inside (the
    /// event's zone) by the speeding margin for long enough: top speed
    /// m/s, the zone's limit m/s.
    ZoneSpeeding = 31,
    /// Moving outside its fleet's working hours (in the fleet's time zone)
    /// for `[detect] off_hours_for_s`: when the movement began, seconds
    /// moving since.
    OffHoursMovement = 32,
    /// The vehicle reached its fleet's service interval (see
    /// [`super::upkeep`]), once per service cycle: metres driven since the
    /// last service, which intervals are reached (1 distance, 2 moving
    /// time, 4 calendar; OR'd).
    ServiceDue = 33,
}

impl EventKind {
    pub const ALL: [EventKind; 33] = [
        Self::EtaChanged,
        Self::Late,
        Self::BackOnTime,
        Self::OffRoute,
        Self::BackOnRoute,
        Self::Arrived,
        Self::Departed,
        Self::Completed,
        Self::Failed,
        Self::Stalled,
        Self::Speeding,
        Self::HarshBraking,
        Self::Offline,
        Self::Online,
        Self::GpsOutlier,
        Self::StopUnreachable,
        Self::Rated,
        Self::OutForDelivery,
        Self::NextStop,
        Self::Arriving,
        Self::Delivered,
        Self::FailedAttempt,
        Self::Rescheduled,
        Self::AtRisk,
        Self::RiskCleared,
        Self::ZoneEntered,
        Self::ZoneLeft,
        Self::ZoneDwell,
        Self::ForbiddenZone,
        Self::OutsideArea,
        Self::ZoneSpeeding,
        Self::OffHoursMovement,
        Self::ServiceDue,
    ];

    /// The customer milestones, in the order a stop goes through them.
    pub const MILESTONES: [EventKind; 6] = [
        Self::OutForDelivery,
        Self::NextStop,
        Self::Arriving,
        Self::Delivered,
        Self::FailedAttempt,
        Self::Rescheduled,
    ];

    /// The kind numbered `code` (its wire and storage number).
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::EtaChanged => "eta_changed",
            Self::Late => "late",
            Self::BackOnTime => "back_on_time",
            Self::OffRoute => "off_route",
            Self::BackOnRoute => "back_on_route",
            Self::Arrived => "arrived",
            Self::Departed => "departed",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Stalled => "stalled",
            Self::Speeding => "speeding",
            Self::HarshBraking => "harsh_braking",
            Self::Offline => "offline",
            Self::Online => "online",
            Self::GpsOutlier => "gps_outlier",
            Self::StopUnreachable => "stop_unreachable",
            Self::Rated => "rated",
            Self::OutForDelivery => "out_for_delivery",
            Self::NextStop => "next_stop",
            Self::Arriving => "arriving",
            Self::Delivered => "delivered",
            Self::FailedAttempt => "failed_attempt",
            Self::Rescheduled => "rescheduled",
            Self::AtRisk => "at_risk",
            Self::RiskCleared => "risk_cleared",
            Self::ZoneEntered => "zone_entered",
            Self::ZoneLeft => "zone_left",
            Self::ZoneDwell => "zone_dwell",
            Self::ForbiddenZone => "forbidden_zone",
            Self::OutsideArea => "outside_area",
            Self::ZoneSpeeding => "zone_speeding",
            Self::OffHoursMovement => "off_hours_movement",
            Self::ServiceDue => "service_due",
        }
    }

    /// Whether events of this kind are about a zone (and carry one, but
    /// for `outside_area` of a vehicle that was never inside its area).
    pub fn is_zone(self) -> bool {
        matches!(
            self,
            Self::ZoneEntered
                | Self::ZoneLeft
                | Self::ZoneDwell
                | Self::ForbiddenZone
                | Self::OutsideArea
                | Self::ZoneSpeeding
        )
    }

    /// The bit of this kind in an [`EventFilter`] kind mask.
    pub fn bit(self) -> u64 {
        1 << (self as u8)
    }
}

/// One detected event. `seq` numbers a vehicle's events (0, 1, 2, …): events
/// are ordered per vehicle, and identical input gives identical events
/// whatever the shard count.
#[derive(Clone, Copy, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Event {
    pub vehicle: VehicleId,
    pub seq: u64,
    /// Event time (of the ping, command or tick that caused it), seconds.
    pub time: f64,
    pub kind: EventKind,
    pub stop: Option<StopId>,
    /// The zone a `zone_*` event is about (never with a stop).
    pub zone: Option<ZoneId>,
    /// The vehicle's last matched (or reported) position.
    pub pos: LatLon,
    /// The figures that triggered it; see [`EventKind`] for their meaning.
    pub value: f64,
    pub reference: f64,
    /// When `value` is a stop's ETA (the P50; see [`Event::eta_window`]):
    /// seconds from its P10 up to it and from it up to its P90.
    /// [`Event::NO_WINDOW`] for other events.
    pub window_s: [f32; 2],
}

impl Event {
    /// No window: an event whose value is not an ETA. Not NaN, so that
    /// equal events compare equal.
    pub const NO_WINDOW: [f32; 2] = [-1.0, -1.0];

    /// The P10 and P90 of the arrival the event announces (event time, s).
    pub fn eta_window(&self) -> Option<(f64, f64)> {
        let [before, after] = self.window_s.map(f64::from);
        let valid = |s: f64| s.is_finite() && s >= 0.0;
        (valid(before) && valid(after) && self.value.is_finite())
            .then_some((self.value - before, self.value + after))
    }
}

/// Which events a subscriber wants; empty fields match everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFilter {
    pub vehicles: Vec<VehicleId>,
    pub stops: Vec<StopId>,
    /// OR of [`EventKind::bit`]; 0 means every kind.
    pub kinds: u64,
}

impl EventFilter {
    pub fn matches(&self, e: &Event) -> bool {
        (self.kinds == 0 || self.kinds & e.kind.bit() != 0)
            && (self.vehicles.is_empty() || self.vehicles.contains(&e.vehicle))
            && (self.stops.is_empty() || e.stop.is_some_and(|s| self.stops.contains(&s)))
    }
}

struct Ring {
    events: VecDeque<Event>,
    /// Id of `events[0]`.
    first_id: u64,
    capacity: usize,
    /// Subscribers read ids below this only: when a durable log backs the
    /// bus, an event is delivered once it is persisted, so no id a
    /// subscriber saw is ever lost or reused after a crash. `u64::MAX`
    /// when nothing holds events back.
    durable: u64,
}

impl Ring {
    fn next_id(&self) -> u64 {
        self.first_id + self.events.len() as u64
    }

    /// The end of what subscribers may read.
    fn readable(&self) -> u64 {
        self.next_id().min(self.durable)
    }
}

/// The longest a publisher waits for the persister to make room in a full
/// ring (per batch).
pub const PERSIST_WAIT: Duration = Duration::from_secs(1);

/// The bounded fan-out of events; share it by `Arc`.
pub struct EventBus {
    ring: Mutex<Ring>,
    published: Condvar,
}

/// What one read returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Events the subscriber missed because it fell behind the ring.
    pub lost: u64,
    /// Events appended to the output.
    pub read: usize,
}

impl EventBus {
    /// A bus that keeps the latest `capacity` events (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            ring: Mutex::new(Ring {
                events: VecDeque::with_capacity(capacity),
                first_id: 0,
                capacity,
                durable: u64::MAX,
            }),
            published: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        // A panic elsewhere while holding the lock leaves the ring valid.
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a batch (draining it), dropping the oldest events beyond
    /// the capacity. With a durable log behind the bus, an event is not
    /// dropped before it is persisted: the publisher waits for the
    /// persister (a burst larger than the ring, say), up to
    /// [`PERSIST_WAIT`] per batch; only a persister that stopped or a store
    /// that fails makes it drop them after that (the persister counts them).
    pub fn publish(&self, batch: &mut Vec<Event>) {
        if batch.is_empty() {
            return;
        }
        let deadline = std::time::Instant::now() + PERSIST_WAIT;
        let mut ring = self.lock();
        for e in batch.drain(..) {
            if ring.events.len() == ring.capacity {
                if ring.durable != u64::MAX && ring.first_id >= ring.durable {
                    // Wake the persister, and wait for it.
                    self.published.notify_all();
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    ring = self
                        .published
                        .wait_timeout_while(ring, left, |r| r.first_id >= r.durable)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                ring.events.pop_front();
                ring.first_id += 1;
            }
            ring.events.push_back(e);
        }
        drop(ring);
        self.published.notify_all();
    }

    /// The id the next published event will get.
    pub fn next_id(&self) -> u64 {
        self.lock().next_id()
    }

    /// The id after the last event subscribers may read now (a new
    /// subscriber's cursor when it wants only what comes next).
    pub fn readable_id(&self) -> u64 {
        self.lock().readable()
    }

    /// Numbers events from `next_id` on (ids continue across a restart);
    /// only before anything is published.
    pub fn resume_at(&self, next_id: u64) {
        let mut ring = self.lock();
        if ring.events.is_empty() {
            ring.first_id = next_id;
        }
    }

    /// Numbers events from `next_id` on even if some are held: those go
    /// (a subscriber behind is told it lost them). For a relay that finds a
    /// gap in its source; nothing when `next_id` is not ahead.
    pub fn skip_to(&self, next_id: u64) {
        let mut ring = self.lock();
        if next_id > ring.next_id() {
            ring.events.clear();
            ring.first_id = next_id;
        }
    }

    /// From now on subscribers see an event only once [`EventBus::mark_durable`]
    /// has covered it.
    pub fn hold_until_durable(&self) {
        let mut ring = self.lock();
        ring.durable = ring.durable.min(ring.next_id());
    }

    /// Events below `upto` are persisted: subscribers may read them.
    pub fn mark_durable(&self, upto: u64) {
        let mut ring = self.lock();
        if ring.durable != u64::MAX && upto > ring.durable {
            ring.durable = upto;
            drop(ring);
            self.published.notify_all();
        }
    }

    /// Reads up to `max` events from `*cursor` on whether or not they are
    /// durable yet (the persister's view), and moves the cursor.
    pub fn read_pending(
        &self,
        cursor: &mut u64,
        max: usize,
        out: &mut Vec<(u64, Event)>,
    ) -> ReadReport {
        let ring = self.lock();
        let mut report = ReadReport::default();
        if *cursor < ring.first_id {
            report.lost = ring.first_id - *cursor;
            *cursor = ring.first_id;
        }
        while *cursor < ring.next_id() && report.read < max {
            out.push((*cursor, ring.events[(*cursor - ring.first_id) as usize]));
            report.read += 1;
            *cursor += 1;
        }
        report
    }

    /// The id of the oldest event still held.
    pub fn oldest_id(&self) -> u64 {
        self.lock().first_id
    }

    /// Reads up to `max` events matching `filter` from `*cursor` on, as
    /// `(id, event)`, and moves the cursor past what it examined.
    pub fn read(
        &self,
        cursor: &mut u64,
        filter: &EventFilter,
        max: usize,
        out: &mut Vec<(u64, Event)>,
    ) -> ReadReport {
        let ring = self.lock();
        let mut report = ReadReport::default();
        if *cursor < ring.first_id {
            report.lost = ring.first_id - *cursor;
            *cursor = ring.first_id;
        }
        while *cursor < ring.readable() && report.read < max {
            let e = ring.events[(*cursor - ring.first_id) as usize];
            if filter.matches(&e) {
                out.push((*cursor, e));
                report.read += 1;
            }
            *cursor += 1;
        }
        report
    }

    /// Waits until a readable event with id `>= cursor` exists or the
    /// timeout passes; true when there is something to read.
    pub fn wait(&self, cursor: u64, timeout: Duration) -> bool {
        let ring = self.lock();
        let (ring, _) = self
            .published
            .wait_timeout_while(ring, timeout, |r| r.readable() <= cursor)
            .unwrap_or_else(|p| p.into_inner());
        ring.readable() > cursor
    }

    /// Waits until an event with id `>= cursor` is published, durable or
    /// not (the persister's wait).
    pub fn wait_published(&self, cursor: u64, timeout: Duration) -> bool {
        let ring = self.lock();
        let (ring, _) = self
            .published
            .wait_timeout_while(ring, timeout, |r| r.next_id() <= cursor)
            .unwrap_or_else(|p| p.into_inner());
        ring.next_id() > cursor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(vehicle: u64, seq: u64, kind: EventKind) -> Event {
        Event {
            vehicle,
            seq,
            time: seq as f64,
            kind,
            stop: Some(vehicle * 10),
            zone: None,
            pos: LatLon::new(0.0, 0.0),
            value: 0.0,
            reference: 0.0,
            window_s: Event::NO_WINDOW,
        }
    }

    #[test]
    fn slow_subscriber_loses_the_oldest_and_is_told_how_many() {
        let bus = EventBus::new(4);
        let mut cursor = bus.next_id();
        let mut batch: Vec<Event> = (0..10).map(|i| ev(1, i, EventKind::EtaChanged)).collect();
        bus.publish(&mut batch);
        assert!(batch.is_empty());
        let mut out = Vec::new();
        let r = bus.read(&mut cursor, &EventFilter::default(), 100, &mut out);
        assert_eq!(r.lost, 6);
        assert_eq!(r.read, 4);
        assert_eq!(
            out.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [6, 7, 8, 9]
        );
        assert_eq!(out[0].1.seq, 6);
        assert_eq!(cursor, 10);
        // Nothing new: nothing read, nothing lost.
        out.clear();
        assert_eq!(
            bus.read(&mut cursor, &EventFilter::default(), 100, &mut out),
            ReadReport::default()
        );
    }

    #[test]
    fn filters_by_vehicle_stop_and_kind_and_reads_in_pages() {
        let bus = EventBus::new(100);
        let mut batch = vec![
            ev(1, 0, EventKind::Late),
            ev(2, 0, EventKind::Late),
            ev(1, 1, EventKind::Arrived),
            ev(3, 0, EventKind::Arrived),
        ];
        bus.publish(&mut batch);
        let mut out = Vec::new();
        let mut cursor = 0;
        let only_1 = EventFilter {
            vehicles: vec![1],
            ..EventFilter::default()
        };
        bus.read(&mut cursor, &only_1, 10, &mut out);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|(_, e)| e.vehicle == 1));
        let (mut cursor, mut out) = (0, Vec::new());
        let arrivals = EventFilter {
            kinds: EventKind::Arrived.bit(),
            stops: vec![30],
            ..EventFilter::default()
        };
        bus.read(&mut cursor, &arrivals, 10, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.vehicle, 3);
        // Pages: one at a time, the cursor resumes where it stopped.
        let (mut cursor, mut out) = (0, Vec::new());
        assert_eq!(
            bus.read(&mut cursor, &EventFilter::default(), 1, &mut out)
                .read,
            1
        );
        assert_eq!(
            bus.read(&mut cursor, &EventFilter::default(), 1, &mut out)
                .read,
            1
        );
        assert_eq!(out[1].0, 1);
    }

    #[test]
    fn held_events_reach_subscribers_once_durable() {
        let bus = EventBus::new(16);
        bus.resume_at(100);
        bus.hold_until_durable();
        bus.publish(&mut (0..5).map(|i| ev(1, i, EventKind::Late)).collect());
        let (mut cursor, mut out) = (bus.readable_id(), Vec::new());
        assert_eq!(cursor, 100);
        assert_eq!(
            bus.read(&mut cursor, &EventFilter::default(), 10, &mut out)
                .read,
            0
        );
        assert!(!bus.wait(cursor, Duration::from_millis(1)));
        // The persister sees them all at once.
        let (mut pc, mut pending) = (100, Vec::new());
        assert_eq!(bus.read_pending(&mut pc, 10, &mut pending).read, 5);
        assert_eq!(pending[0].0, 100);
        bus.mark_durable(103);
        assert!(bus.wait(cursor, Duration::from_millis(1)));
        bus.read(&mut cursor, &EventFilter::default(), 10, &mut out);
        assert_eq!(
            out.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            [100, 101, 102]
        );
        bus.mark_durable(105);
        assert_eq!(
            bus.read(&mut cursor, &EventFilter::default(), 10, &mut out)
                .read,
            2
        );
    }

    /// A burst larger than the ring, with a durable log behind it: the
    /// publisher waits for the persister, which sees every event.
    #[test]
    fn a_burst_beyond_the_ring_waits_for_the_persister_and_loses_nothing() {
        let bus = std::sync::Arc::new(EventBus::new(4));
        bus.hold_until_durable();
        let persister = {
            let bus = bus.clone();
            std::thread::spawn(move || {
                let (mut cursor, mut seen) = (0u64, Vec::new());
                while seen.len() < 50 {
                    if !bus.wait_published(cursor, Duration::from_secs(5)) {
                        break;
                    }
                    let mut got = Vec::new();
                    let r = bus.read_pending(&mut cursor, 3, &mut got);
                    assert_eq!(r.lost, 0, "nothing dropped before it was persisted");
                    seen.extend(got.into_iter().map(|(id, _)| id));
                    bus.mark_durable(cursor);
                }
                seen
            })
        };
        bus.publish(&mut (0..50).map(|i| ev(1, i, EventKind::Late)).collect());
        let seen = persister.join().unwrap();
        assert_eq!(seen, (0..50).collect::<Vec<u64>>());
    }
    #[test]
    fn kinds_round_trip_their_codes() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::from_code(k as u8), Some(k));
        }
        assert_eq!(EventKind::from_code(0), None);
        assert_eq!(EventKind::from_code(EventKind::ALL.len() as u8 + 1), None);
    }

    #[test]
    fn wait_returns_when_something_is_published() {
        let bus = std::sync::Arc::new(EventBus::new(8));
        assert!(!bus.wait(0, Duration::from_millis(1)));
        let b = bus.clone();
        let t = std::thread::spawn(move || b.wait(0, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(20));
        bus.publish(&mut vec![ev(1, 0, EventKind::Online)]);
        assert!(t.join().unwrap());
    }
}
