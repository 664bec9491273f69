//! One vehicle's live state and what each ping, command and tick does to it:
//! match, motion and odometer, stop lifecycle (geofence arrival and
//! departure), incremental ETAs along the leg to the next stop and the legs
//! between stops, and the detectors. Everything runs inside the vehicle's
//! shard, in event time.

use lastmile_roadgraph::geo::haversine_m;
use lastmile_roadgraph::{EdgePos, LatLon, LatLonE7, SpeedLimit};

use super::detect::{
    Braking, Motion, OffRoute, Pending, RouteChange, Speeding, confirm, confirm_for, lateness, risk,
};
use super::events::{Event, EventKind};
use super::legs::{Leg, StopLeg, StopPlace};
use super::milestones::{Milestones, Situation};
use super::partition::Ctx;
use super::path_code::PathCode;
use super::snapshot::{EtaState, StopEta, VehicleSnapshot};
use super::stops::{Command, ProofOfDelivery, StopOutcome, StopPlan, StopStatus};
use super::upkeep::{self, Upkeep};
use super::window::{self, Sampler};
use super::zone_rules::Rules;
use super::{PathPiece, StopId, VehicleId};
use crate::Ping;
use crate::matcher::{MatchStatus, VehicleTrack};
use crate::traffic::TraversalAccumulator;
use crate::zones::{Judging, Presence, ZoneChange};

/// Closed stops a vehicle keeps for its snapshot (the durable history is
/// the store's job); older ones are forgotten so memory stays bounded.
const KEEP_CLOSED: usize = 16;
/// Longest interval between two positions counted as moving time, s.
const MAX_MOVING_GAP_S: f64 = 300.0;
/// Time constant of the speed estimate when the device reports none, s.
const SPEED_TAU_S: f64 = 5.0;

/// One stop of a vehicle's route.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug)]
pub(crate) struct StopState {
    pub plan: StopPlan,
    pub place: StopPlace,
    /// The snapped road position (where the vehicle will stand).
    road_pos: LatLonE7,
    pub status: StopStatus,
    /// The P50 arrival, and the P10 and P90 around it (see
    /// [`super::window`]); for a reached stop, all three its arrival.
    pub eta: f64,
    pub p10: f64,
    pub p90: f64,
    pub eta_state: EtaState,
    /// Metres to go, as routed (`f32`, as the leg's own figure is).
    pub remaining_m: f32,
    /// ETA last announced by `eta_changed` (NaN: none yet).
    pub announced: f64,
    pub late: bool,
    /// Likely to miss its window (see [`super::detect::risk`]).
    pub at_risk: bool,
    /// Since when `late` and `at_risk` have been waiting to be confirmed
    /// (see [`super::detect::confirm`]).
    late_pending: Pending,
    risk_pending: Pending,
    /// The customer milestones sent in this attempt.
    milestones: Milestones,
    /// When it arrived (NaN: not yet).
    pub arrived_at: f64,
    /// Boxed: rare, and large next to the rest.
    pub outcome: Option<Box<StopOutcome>>,
}

impl StopState {
    /// Where the vehicle will stand to serve it.
    pub fn road_pos(&self) -> LatLon {
        self.road_pos.latlon()
    }

    /// Reached or closed: no more `late` or risk, raised or waiting.
    fn settle_lateness(&mut self) {
        (self.late, self.at_risk) = (false, false);
        (self.late_pending, self.risk_pending) = (Pending::default(), Pending::default());
    }
}

/// Where the vehicle was last placed on a road.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug)]
struct Placed {
    time: f64,
    edge: u32,
    /// `f32` and fixed point: a centimetre is finer than any fix, and this
    /// is held per vehicle.
    offset_m: f32,
    point: LatLonE7,
}

impl Placed {
    fn offset_m(&self) -> f64 {
        f64::from(self.offset_m)
    }

    fn point(&self) -> LatLon {
        self.point.latlon()
    }
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct Vehicle {
    pub id: VehicleId,
    track: VehicleTrack,
    traversals: TraversalAccumulator,
    /// Time of the last ping taken (any status), and its position.
    last_seen: Option<(f64, LatLon)>,
    placed: Option<Placed>,
    speed_mps: f64,
    /// Metres between the last two matched points.
    moved_m: f64,
    heading_deg: f64,
    motion: Motion,
    online: bool,
    odometer_m: f64,
    odometer_day: i64,
    /// Lifetime odometer, moving time and service counts (kept across days
    /// and restarts).
    upkeep: Upkeep,
    event_seq: u64,
    last_status: MatchStatus,
    /// Route order: closed stops first (at most [`KEEP_CLOSED`]), then the rest.
    stops: Vec<StopState>,
    /// The path to the next remaining stop, and which stop that is.
    leg: Option<(StopId, Leg)>,
    /// No road led to this stop from this edge on this metric version: not
    /// searched again until the vehicle moves to another edge or the
    /// metric changes (a van in a dead end would search on every ping).
    no_route: Option<(StopId, u32, u64)>,
    /// The path planned when the leg began, kept when the vehicle left it
    /// and the ETA path was rerouted: off-route is judged against it.
    planned: Option<PathCode>,
    /// Paths between consecutive remaining stops, keyed by the stop pair.
    stop_legs: Vec<((StopId, StopId), Option<StopLeg>)>,
    /// Remaining seconds and metres to the next stop from the last position.
    /// (`f32`: a millisecond and a centimetre over the longest leg.)
    to_next: Option<(f32, f32)>,
    /// Time the plan had left where the vehicle was last on it, and the
    /// time (live metric) driven since off it: the detour's two halves.
    plan_left_s: f64,
    off_driven_s: f64,
    /// Consecutive pings matched off the ETA path (one is tolerated).
    off_path_pings: u8,
    /// The metric version the leg was routed on, and whether a new metric
    /// moved its time enough to search it again at the next ping.
    leg_metric: u64,
    leg_stale: bool,
    /// The metric version the paths were last timed on.
    metric_seen: u64,
    /// Stale paths are searched again from this time on: a metric update
    /// spreads its searches over the fleet by a phase per vehicle.
    stale_from: f64,
    refresh_at: f64,
    /// Inside the geofence of this arrived stop, since.
    at_stop: Option<(StopId, f64)>,
    /// Slow inside the geofence of this stop that is not the next one, since.
    lingering: Option<(StopId, f64)>,
    /// Inside the geofence of the next stop (moving or not), and when it
    /// reached the stop itself: the first ping inside plus the distance
    /// left at the speed it had. That is what its ETA predicted (the
    /// arrival is only sure once the vehicle has slowed down, a ping or two
    /// later; the geofence's edge is tens of metres before the door).
    entered: Option<(StopId, f64)>,
    off_route: OffRoute,
    speeding: Speeding,
    braking: Braking,
    stalled: bool,
    /// Predictions noted to learn arrival windows from.
    sampler: Sampler,
    /// The fleet's zones the vehicle is inside, and their rules' state.
    zones: Presence,
    rules: Rules,
}

impl Vehicle {
    pub fn new(id: VehicleId) -> Self {
        Self {
            id,
            track: VehicleTrack::new(),
            traversals: TraversalAccumulator::default(),
            last_seen: None,
            placed: None,
            speed_mps: 0.0,
            moved_m: 0.0,
            heading_deg: f64::NAN,
            motion: Motion::new(),
            online: false,
            odometer_m: 0.0,
            odometer_day: i64::MIN,
            upkeep: Upkeep::default(),
            event_seq: 0,
            last_status: MatchStatus::Invalid,
            stops: Vec::new(),
            leg: None,
            no_route: None,
            planned: None,
            stop_legs: Vec::new(),
            to_next: None,
            plan_left_s: f64::NAN,
            off_driven_s: 0.0,
            off_path_pings: 0,
            leg_metric: 0,
            leg_stale: false,
            metric_seen: 0,
            stale_from: f64::INFINITY,
            refresh_at: f64::NEG_INFINITY,
            at_stop: None,
            lingering: None,
            entered: None,
            off_route: OffRoute::default(),
            speeding: Speeding::default(),
            braking: Braking::default(),
            stalled: false,
            sampler: Sampler::default(),
            zones: Presence::default(),
            rules: Rules::default(),
        }
    }

    fn pos(&self) -> LatLon {
        self.placed
            .map(|p| p.point())
            .or(self.last_seen.map(|s| s.1))
            .unwrap_or(LatLon::new(f64::NAN, f64::NAN))
    }

    /// A vehicle read back from a checkpoint: what it measured against
    /// zones of another process is measured again.
    pub fn restored(mut self) -> Self {
        self.zones.remeasure();
        self
    }

    /// Publishes an event (at the shard's next batch end); returns it for
    /// the fields few events have.
    fn emit<'c>(
        &mut self,
        ctx: &'c mut Ctx,
        kind: EventKind,
        time: f64,
        stop: Option<StopId>,
        value: f64,
        reference: f64,
    ) -> &'c mut Event {
        ctx.events.push(Event {
            vehicle: self.id,
            seq: self.event_seq,
            time,
            kind,
            stop,
            zone: None,
            pos: self.pos(),
            value,
            reference,
            window_s: Event::NO_WINDOW,
        });
        self.event_seq += 1;
        ctx.counters.events[kind as usize] += 1;
        ctx.events.last_mut().expect("just pushed")
    }

    /// Heap bytes held by this vehicle (allocated capacity).
    pub fn heap_bytes(&self) -> usize {
        self.track.heap_bytes()
            + self.stops.capacity() * std::mem::size_of::<StopState>()
            + self
                .stops
                .iter()
                .map(|s| s.plan.customer_ref.as_ref().map_or(0, |r| r.len()))
                .sum::<usize>()
            + self.leg.as_ref().map_or(0, |(_, l)| l.heap_bytes())
            + self.planned.as_ref().map_or(0, PathCode::heap_bytes)
            + self.stop_legs.capacity() * std::mem::size_of::<((StopId, StopId), Option<StopLeg>)>()
            + self
                .stop_legs
                .iter()
                .map(|(_, l)| l.as_ref().map_or(0, StopLeg::heap_bytes))
                .sum::<usize>()
            + self.sampler.heap_bytes()
    }

    // ----------------------------------------------------------------- pings

    /// Takes one ping through the whole pipeline.
    pub fn on_ping(&mut self, ctx: &mut Ctx, ping: &Ping) {
        let status = ctx.matcher.push(&mut self.track, ping, &mut ctx.out);
        match status {
            MatchStatus::Invalid | MatchStatus::OutOfOrder | MatchStatus::Duplicate => return,
            _ => {}
        }
        self.last_status = status;
        let now = ping.time;
        if !self.online {
            let silence = self.last_seen.map_or(0.0, |(t, _)| now - t);
            self.online = true;
            self.emit(ctx, EventKind::Online, now, None, silence, 0.0);
        }
        self.last_seen = Some((now, ping.pos));
        self.upkeep.seen(now);
        self.take_path(ctx, status);
        match status {
            MatchStatus::Outlier => {
                let d = self
                    .placed
                    .map_or(f64::NAN, |p| haversine_m(p.point(), ping.pos));
                // Unknown distance (never placed yet) is reported too.
                if d.is_nan() || d >= ctx.detect.outlier_min_m {
                    let min = ctx.detect.outlier_min_m;
                    self.emit(ctx, EventKind::GpsOutlier, now, None, d, min);
                }
                return;
            }
            MatchStatus::Unmatched => return,
            _ => {}
        }
        let est = ctx.out.immediate;
        let here = Placed {
            time: now,
            edge: est.edge,
            offset_m: est.offset_m as f32,
            point: est.point.into(),
        };
        let prev = self.placed.replace(here);
        self.update_motion(ctx, ping, prev, here, status);
        self.check_zones(ctx, here);
        self.check_hours(ctx, now);
        self.check_service(ctx, now);
        self.check_stops(ctx, now);
        self.update_etas(ctx, now, true);
        self.check_stall(ctx, now);
    }

    /// The finalised path: odometer, traffic observations and history.
    fn take_path(&mut self, ctx: &mut Ctx, status: MatchStatus) {
        if matches!(status, MatchStatus::Reset | MatchStatus::Break) {
            self.traversals.close(&mut ctx.observations);
        }
        for i in 0..ctx.out.path.len() {
            let t = ctx.out.path[i];
            let day = (t.t_end / 86_400.0).floor() as i64;
            if day != self.odometer_day {
                self.odometer_day = day;
                self.odometer_m = 0.0;
            }
            let gap = upkeep::bridge(&mut ctx.router, ctx.graph, self.upkeep.path_end, &t);
            let driven = gap + (t.to_m - t.from_m).max(0.0);
            self.odometer_m += driven;
            self.upkeep.drove(driven);
            self.upkeep.ended(&t);
            self.traversals
                .push(&t, &ctx.traffic, &mut ctx.observations);
            if let Some(h) = ctx.history.as_mut() {
                h.push(PathPiece {
                    vehicle: self.id,
                    edge: t.edge,
                    from_m: t.from_m,
                    to_m: t.to_m,
                    t_start: t.t_start,
                    t_end: t.t_end,
                });
            }
        }
    }

    fn update_motion(
        &mut self,
        ctx: &mut Ctx,
        ping: &Ping,
        prev: Option<Placed>,
        here: Placed,
        status: MatchStatus,
    ) {
        let now = here.time;
        self.moved_m = prev.map_or(0.0, |p| haversine_m(p.point(), here.point()));
        let reported = ping.valid_speed();
        self.speed_mps = match (reported, prev) {
            (Some(v), _) => v,
            (None, Some(prev)) if status == MatchStatus::Matched && now > prev.time => {
                // Matched points of a standing vehicle do not move (the
                // matcher holds them), so their displacement is a fair speed;
                // smoothed, since single steps carry the GPS noise.
                let v = haversine_m(prev.point(), here.point()) / (now - prev.time);
                let a = 1.0 - (-(now - prev.time) / SPEED_TAU_S).exp();
                self.speed_mps + a * (v - self.speed_mps)
            }
            _ => 0.0,
        };
        let g = ctx.graph;
        self.heading_deg = ping
            .valid_heading()
            .unwrap_or_else(|| g.edge_bearing(here.edge, here.offset_m()));
        // Moving time: the intervals the vehicle was moving at their start;
        // a silence longer than `MAX_MOVING_GAP_S` is not driving.
        if self.motion.moving
            && let Some(prev) = prev
        {
            let gap = now - prev.time;
            if gap > 0.0 && gap <= MAX_MOVING_GAP_S {
                self.upkeep.moved(gap);
            }
        }
        if self.motion.observe(&ctx.detect, now, self.speed_mps) && self.motion.moving {
            self.stalled = false;
        }
        let limit = match g.speed_limit(here.edge) {
            SpeedLimit::Kmh(k) => Some(f64::from(k) / 3.6),
            SpeedLimit::Unknown | SpeedLimit::None => None,
        };
        if self
            .speeding
            .observe(&ctx.detect, now, self.speed_mps, limit)
        {
            let (top, lim) = (self.speeding.top_mps, limit.unwrap_or(f64::NAN));
            self.emit(ctx, EventKind::Speeding, now, None, top, lim);
        }
        // Braking needs the device's own speeds: speeds from positions are
        // too noisy over one or two seconds.
        if let Some(v) = reported
            && let Some(decel) = self.braking.observe(&ctx.detect, now, v)
        {
            let threshold = ctx.detect.harsh_braking_mps2;
            self.emit(ctx, EventKind::HarshBraking, now, None, decel, threshold);
        }
    }

    /// Judges the matched position against the fleet's zones.
    fn check_zones(&mut self, ctx: &mut Ctx, here: Placed) {
        let zones = ctx.zones.clone();
        let Some(set) = zones.of_vehicle(self.id) else {
            if !self.zones.is_empty() {
                // The fleet's last zone was removed: forgotten, not left.
                self.zones = Presence::default();
                self.rules = Rules::default();
            }
            return;
        };
        let judging = Judging {
            margin_m: ctx.detect.zone_margin_m,
            positions: ctx.detect.zone_positions,
        };
        let mut out = std::mem::take(&mut ctx.zone_events);
        self.zones
            .observe(set, here.point(), here.time, judging, &mut out);
        let mut told = Vec::new();
        let (c, speed) = (ctx.detect, self.speed_mps);
        self.rules
            .judge(&c, set, &self.zones, &out, (here.time, speed), &mut told);
        for e in out.drain(..) {
            let (kind, value, reference) = match e.change {
                ZoneChange::Entered => (EventKind::ZoneEntered, e.since, e.time - e.since),
                ZoneChange::Left => (EventKind::ZoneLeft, e.since, e.inside_s),
                ZoneChange::Dwell => (EventKind::ZoneDwell, e.since, e.time - e.since),
            };
            self.emit(ctx, kind, e.time, None, value, reference).zone = Some(e.zone);
        }
        for (kind, zone, value, reference) in told {
            self.emit(ctx, kind, here.time, None, value, reference).zone = zone;
        }
        ctx.zone_events = out;
    }

    /// Judges movement against the fleet's working hours.
    fn check_hours(&mut self, ctx: &mut Ctx, now: f64) {
        let zones = ctx.zones.clone();
        let Some(hours) = zones.hours_of(self.id) else {
            return;
        };
        let mut told = Vec::new();
        let (c, moving) = (ctx.detect, self.motion.moving);
        self.rules.judge_hours(&c, hours, moving, now, &mut told);
        for (kind, zone, value, reference) in told {
            self.emit(ctx, kind, now, None, value, reference).zone = zone;
        }
    }

    /// `service_due` once the fleet's service interval is reached.
    fn check_service(&mut self, ctx: &mut Ctx, now: f64) {
        let zones = ctx.zones.clone();
        if let Some(interval) = zones.service_of(self.id)
            && let Some(due) = self.upkeep.judge(interval, now)
        {
            let driven = self.upkeep.service.driven_m;
            self.emit(
                ctx,
                EventKind::ServiceDue,
                now,
                None,
                driven,
                f64::from(due),
            );
        }
    }

    // ----------------------------------------------------------------- stops

    fn next_index(&self) -> Option<usize> {
        self.stops.iter().position(|s| s.status.is_remaining())
    }

    /// Marks the first remaining stop `next`, the other remaining ones `pending`.
    fn mark_next(&mut self) {
        let mut first = true;
        for s in self.stops.iter_mut().filter(|s| s.status.is_remaining()) {
            s.status = if first {
                StopStatus::Next
            } else {
                StopStatus::Pending
            };
            first = false;
        }
    }

    /// Whether the vehicle at `p` is within `radius` of remaining stop `id`.
    fn near_stop(&self, id: StopId, p: Placed, radius: f64) -> bool {
        self.stops
            .iter()
            .find(|s| s.plan.id == id && s.status.is_remaining())
            .is_some_and(|s| haversine_m(s.road_pos(), p.point()) <= radius)
    }

    fn check_stops(&mut self, ctx: &mut Ctx, now: f64) {
        let Some(p) = self.placed else { return };
        if let Some((id, since)) = self.at_stop {
            let away = self
                .stops
                .iter()
                .find(|s| s.plan.id == id)
                .map_or(f64::INFINITY, |s| haversine_m(s.road_pos(), p.point()));
            if away > ctx.detect.depart_radius_m {
                self.at_stop = None;
                let r = ctx.detect.depart_radius_m;
                self.emit(ctx, EventKind::Departed, now, Some(id), now - since, r);
            }
        }
        self.note_entry(p, now, ctx.detect.arrive_radius_m);
        if self.at_stop.is_some() || self.speed_mps >= ctx.detect.arrive_speed_mps {
            self.lingering = None;
            return;
        }
        // The next stop when inside its geofence; else the nearest remaining
        // stop there, reached out of order, but only once the vehicle has
        // lingered (see `out_of_order_dwell_s`).
        let radius = ctx.detect.arrive_radius_m;
        let next = self.next_index();
        let dist = |s: &StopState| haversine_m(s.road_pos(), p.point());
        let at_next = next
            .map(|i| (i, dist(&self.stops[i])))
            .filter(|&(_, d)| d <= radius);

        let hit = at_next.or_else(|| {
            let (i, d) = self
                .stops
                .iter()
                .enumerate()
                .filter(|(_, s)| s.status.is_remaining())
                .map(|(i, s)| (i, dist(s)))
                .filter(|&(_, d)| d <= radius)
                .min_by(|a, b| a.1.total_cmp(&b.1))?;
            let id = self.stops[i].plan.id;
            let since = match self.lingering {
                Some((s, t)) if s == id => t,
                _ => {
                    self.lingering = Some((id, now));
                    now
                }
            };
            (now - since >= ctx.detect.out_of_order_dwell_s).then_some((i, d))
        });
        if hit.is_none()
            && self
                .lingering
                .is_some_and(|(s, _)| !self.near_stop(s, p, radius))
        {
            self.lingering = None;
        }
        if let Some((i, d)) = hit {
            self.lingering = None;
            let id = self.stops[i].plan.id;
            let s = &mut self.stops[i];
            s.status = StopStatus::Arrived;
            s.arrived_at = now;
            (s.eta, s.p10, s.p90) = (now, now, now);
            s.eta_state = EtaState::Known;
            let got_there = match self.entered {
                Some((e, t)) if e == id => t.min(now),
                _ => now,
            };
            self.sampler
                .reached(self.id, id, got_there, &mut ctx.outcomes);
            s.remaining_m = 0.0;
            self.at_stop = Some((id, now));
            self.emit(ctx, EventKind::Arrived, now, Some(id), d, radius);
            self.send_milestones(ctx, i, now, 0);
            // Arrived: lateness is settled, no more late/back_on_time, and
            // no more risk.
            self.stops[i].settle_lateness();
            self.end_leg(ctx, now);
            self.mark_next();
        }
    }

    /// Keeps when the vehicle came within `radius` of its next stop, and so
    /// when it reached it (see `entered`), whatever its speed.
    fn note_entry(&mut self, p: Placed, now: f64, radius: f64) {
        let next = self
            .next_index()
            .map(|i| &self.stops[i])
            .map(|s| (s.plan.id, haversine_m(s.road_pos(), p.point())))
            .filter(|&(_, d)| d <= radius);
        self.entered = match (next, self.entered) {
            (Some((id, _)), Some((e, t))) if e == id => Some((e, t)),
            (Some((id, d)), _) => {
                // At a walking pace or below, it is there.
                let v = self.speed_mps;
                let left_s = if v >= 2.0 { d / v } else { 0.0 };
                Some((id, now + left_s))
            }
            (None, _) => None,
        };
    }

    /// The leg to the next stop is over (arrived, route changed).
    fn end_leg(&mut self, ctx: &mut Ctx, now: f64) {
        if let Some(off_for) = self.off_route.reset(now) {
            self.emit(ctx, EventKind::BackOnRoute, now, None, off_for, 0.0);
        }
        self.leg = None;
        self.planned = None;
        self.to_next = None;
        self.plan_left_s = f64::NAN;
        self.off_driven_s = 0.0;
    }

    fn check_stall(&mut self, ctx: &mut Ctx, now: f64) {
        if self.motion.moving
            || self.stalled
            || self.at_stop.is_some()
            || self.next_index().is_none()
        {
            return;
        }
        let still = now - self.motion.since;
        if still >= ctx.detect.stall_s {
            self.stalled = true;
            let next = self.next_index().map(|i| self.stops[i].plan.id);
            let threshold = ctx.detect.stall_s;
            self.emit(ctx, EventKind::Stalled, now, next, still, threshold);
        }
    }

    // ------------------------------------------------------------------ ETAs

    /// Routes from the vehicle's position to the next stop.
    fn route_leg(&mut self, ctx: &mut Ctx, i: usize) -> bool {
        let Some(p) = self.placed else { return false };
        let from = EdgePos {
            edge: p.edge,
            offset_m: p.offset_m(),
        };
        ctx.counters.leg_routes += 1;
        let id = self.stops[i].plan.id;
        self.leg_metric = ctx.metric_version;
        match ctx.router.route(&[from], &self.stops[i].place.positions()) {
            Some(r) => {
                let leg = Leg::from_route(ctx.graph, ctx.router.metric(), r);
                self.leg = Some((id, leg));
                self.no_route = None;
                true
            }
            None => {
                ctx.counters.unroutable += 1;
                self.leg = None;
                self.no_route = Some((id, p.edge, ctx.metric_version));
                false
            }
        }
    }

    /// Where the vehicle is on its leg: advance along the path, reroute when
    /// it left it (or for the periodic refresh), and judge off-route.
    fn advance_leg(&mut self, ctx: &mut Ctx, now: f64, from_ping: bool) {
        let prev = self.to_next.take();
        let (Some(i), Some(p)) = (self.next_index(), self.placed) else {
            return;
        };
        let id = self.stops[i].plan.id;
        let known_unreachable = self.no_route == Some((id, p.edge, ctx.metric_version));
        if self.leg.as_ref().is_none_or(|(to, _)| *to != id) && !known_unreachable {
            self.leg = None;
            self.planned = None;
            self.off_route.reset(now);
            self.refresh_at = ctx.eta.next_refresh(self.id, now);
            self.route_leg(ctx, i);
        } else if from_ping && now >= self.refresh_at {
            // The periodic refresh: a better path may exist now, but only if
            // the metric changed since the leg was routed (on the same
            // metric, the rest of a shortest path is still shortest).
            // Staggered per vehicle so the work is even over time.
            self.refresh_at = ctx.eta.next_refresh(self.id, now);
            if self.leg_metric != ctx.metric_version {
                ctx.counters.refreshes += 1;
                self.reroute(ctx, i, now);
            }
        }
        let Some((_, leg)) = self.leg.as_mut() else {
            return;
        };
        let mut progress = leg.advance(ctx.graph, ctx.router.metric(), p.edge, p.offset_m());
        if progress.is_some() {
            self.off_path_pings = 0;
        } else if from_ping && self.off_path_pings == 0 && prev.is_some() {
            // One ping off the path is often the live match wavering at a
            // junction: keep the last figures, and route again only if the
            // next ping is off the path too.
            self.off_path_pings = 1;
            self.to_next = prev;
            self.judge_off_route(ctx, now, p.edge, false);
            return;
        } else {
            // Left the ETA path: a new one from here.
            self.off_path_pings = 0;
            ctx.counters.reroutes += 1;
            self.reroute(ctx, i, now);
            progress = self
                .leg
                .as_mut()
                .and_then(|(_, l)| l.advance(ctx.graph, ctx.router.metric(), p.edge, p.offset_m()));
        }
        self.to_next = progress.map(|pr| (pr.remaining_s as f32, pr.remaining_m as f32));
        if from_ping {
            let on_leg = progress.is_some();
            self.judge_off_route(ctx, now, p.edge, on_leg);
        }
    }

    /// A new ETA path to stop `i`. The plan the vehicle is judged against
    /// is the path it had once under way: a leg computed while standing
    /// (at a stop, facing whichever way the fix says) is provisional until
    /// the vehicle has driven off, so its first reroutes replace it.
    fn reroute(&mut self, ctx: &mut Ctx, i: usize, now: f64) {
        let old = self.leg.take();
        let under_way = self.motion.moving && now - self.motion.since >= ctx.detect.plan_settle_s;
        if under_way
            && self.planned.is_none()
            && let Some((_, l)) = old
        {
            self.planned = Some(l.path().clone());
        }
        self.route_leg(ctx, i);
    }

    /// Judges the vehicle against the planned path. Leaving it costs
    /// nothing when the way taken is as fast (a grid offers many equal
    /// paths), so what counts is the detour: the time driven off the plan
    /// plus the time still to go from here, against the time the plan had
    /// left where the vehicle left it (all on the live metric).
    /// `on_leg`: the edge was just found on the ETA path.
    fn judge_off_route(&mut self, ctx: &mut Ctx, now: f64, edge: u32, on_leg: bool) {
        let g = ctx.graph;
        let rev = g.reverse_edge(edge);
        let on = match (&self.planned, &self.leg) {
            (Some(p), _) => p.iter().any(|e| e == edge || Some(e) == rev),
            // The plan is the ETA path: found on it ahead, it is on.
            (None, Some(_)) if on_leg => true,
            (None, Some((_, l))) => l.path().iter().any(|e| e == edge || Some(e) == rev),
            (None, None) => return,
        };
        let remaining = self.to_next.map_or(f64::NAN, |r| f64::from(r.0));
        let detour = if on {
            self.plan_left_s = remaining;
            self.off_driven_s = 0.0;
            0.0
        } else {
            // Driving time per metre (learnt traffic included), not the
            // edge's whole time over its length: a short edge's junction
            // delay spread over it would make a few metres on it cost
            // seconds.
            let learnt = f64::from(ctx.router.metric().edge_weight(edge))
                / f64::from(g.travel_time_ms(edge)).max(1.0);
            let per_m = learnt / g.driving_speed_mps(edge).max(0.1);
            self.off_driven_s += self.moved_m * per_m;
            self.off_driven_s + remaining - self.plan_left_s
        };
        let moved = self.moved_m;
        match self.off_route.observe(&ctx.detect, now, on, moved, detour) {
            Some(RouteChange::Left(d)) => {
                let next = self.next_index().map(|i| self.stops[i].plan.id);
                let threshold = ctx.detect.off_route_detour_s;
                self.emit(ctx, EventKind::OffRoute, now, next, d, threshold);
            }
            Some(RouteChange::Rejoined(s)) => {
                let next = self.next_index().map(|i| self.stops[i].plan.id);
                self.emit(ctx, EventKind::BackOnRoute, now, next, s, 0.0);
            }
            None => {}
        }
    }

    /// Makes `stop_legs` follow the remaining stops, reusing the paths of
    /// pairs that did not change and routing the new ones.
    fn sync_stop_legs(&mut self, ctx: &mut Ctx) {
        let remaining: Vec<usize> = (0..self.stops.len())
            .filter(|&i| self.stops[i].status.is_remaining())
            .collect();
        let pairs = remaining
            .windows(2)
            .map(|w| (self.stops[w[0]].plan.id, self.stops[w[1]].plan.id));
        if self.stop_legs.len() == remaining.len().saturating_sub(1)
            && pairs
                .clone()
                .zip(&self.stop_legs)
                .all(|(p, (k, _))| p == *k)
        {
            return;
        }
        let mut old = std::mem::take(&mut self.stop_legs);
        // Exactly one per pair: every vehicle keeps its list, so doubling's
        // slack would be paid fleet-wide.
        self.stop_legs
            .reserve_exact(remaining.len().saturating_sub(1));
        for w in remaining.windows(2) {
            let key = (self.stops[w[0]].plan.id, self.stops[w[1]].plan.id);
            let leg = match old.iter().position(|(k, _)| *k == key) {
                Some(j) => old.swap_remove(j).1,
                None => {
                    ctx.counters.stop_leg_routes += 1;
                    let (a, b) = (&self.stops[w[0]].place, &self.stops[w[1]].place);
                    ctx.router
                        .route(&a.positions(), &b.positions())
                        .map(|r| StopLeg::from_route(ctx.graph, ctx.router.metric(), r))
                }
            };
            self.stop_legs.push((key, leg));
        }
    }

    /// Recomputes every remaining stop's ETA from the position on the leg
    /// and runs the ETA detectors.
    fn update_etas(&mut self, ctx: &mut Ctx, now: f64, from_ping: bool) {
        // Legs are advanced on the current metric, so they are timed on it
        // first (a command can come before the first ping since it changed).
        self.catch_up_metric(ctx, now);
        if from_ping {
            self.reroute_stale(ctx, now);
        }
        self.advance_leg(ctx, now, from_ping);
        self.sync_stop_legs(ctx);
        let base_time = self.placed.map_or(now, |p| p.time);
        // Still serving the stop it stands at.
        let serving = self
            .at_stop
            .and_then(|(id, since)| {
                self.stops
                    .iter()
                    .find(|s| s.plan.id == id)
                    .map(|s| (since, s))
            })
            .filter(|(_, s)| s.status == StopStatus::Arrived)
            .map_or(0.0, |(since, s)| {
                (since + s.plan.service_s - base_time).max(0.0)
            });
        // Standing away from its work: the windows of vehicles that stand
        // are learnt apart (see `window`).
        let standing =
            serving == 0.0 && !self.motion.moving && now - self.motion.since >= window::STANDING_S;
        let (mut t, mut m) = match self.to_next {
            Some((s, m)) => (base_time + serving + f64::from(s), f64::from(m)),
            None => (f64::NAN, f64::NAN),
        };
        let next = self.next_index().map(|i| self.stops[i].plan.id);
        let mut state = if self.to_next.is_some() {
            EtaState::Known
        } else if self.no_route.is_some_and(|(s, _, _)| Some(s) == next) {
            EtaState::Unreachable
        } else {
            EtaState::Unknown
        };
        let mut k = 0;
        let mut prev: Option<usize> = None;
        let c = ctx.detect;
        let eta_change = c.eta_change_s;
        let windows = ctx.windows.clone();
        let table = windows.table(self.id);
        // Which later stop's prediction is noted now, if any (the next
        // stop's is judged where its routed time is known, below).
        let stops = &self.stops;
        let later = from_ping
            .then(|| {
                let (every, max) = (ctx.eta.window_note_s, ctx.eta.window_notes);
                self.sampler.prune(now, every, max, |id| {
                    stops
                        .iter()
                        .any(|s| s.plan.id == id && s.status.is_remaining())
                });
                let remaining = stops.iter().filter(|s| s.status.is_remaining()).count();
                let later = remaining.saturating_sub(1);
                self.sampler.later_due(now, later, ctx.eta.window_notes)
            })
            .flatten()
            .map(|j| j + 1);
        for i in 0..self.stops.len() {
            if !self.stops[i].status.is_remaining() {
                continue;
            }
            if let Some(p) = prev {
                let leg = self.stop_legs.get(k - 1).and_then(|(_, l)| l.as_ref());
                match leg {
                    Some(l) => {
                        t += self.stops[p].plan.service_s + l.seconds;
                        m += l.metres;
                        if state != EtaState::Known {
                            state = EtaState::Unknown;
                        }
                    }
                    None => {
                        (t, m) = (f64::NAN, f64::NAN);
                        state = EtaState::Unreachable;
                    }
                }
            }
            // `t` is the routed arrival; the ETA is the P50 of what routed
            // times like it came to.
            let routed = t - now;
            let id = self.stops[i].plan.id;
            let (every, max) = (ctx.eta.window_note_s, ctx.eta.window_notes);
            if from_ping && k == 0 && self.sampler.next_due(id, now, routed, every, max) {
                self.sampler.note(id, now, routed, standing);
            } else if later == Some(k) {
                if routed.is_finite() {
                    self.sampler.note_later(id, now, routed, standing, every);
                } else {
                    self.sampler.skip();
                }
            }
            let [lo, mid, hi] = table.window(routed, standing);
            let s = &mut self.stops[i];
            (s.eta, s.p10, s.p90) = (now + mid, now + lo, now + hi);
            let t = s.eta;
            let was = std::mem::replace(&mut s.eta_state, state);
            if state == EtaState::Unreachable && was != EtaState::Unreachable {
                let (id, snap_m, component) = (s.plan.id, s.place.snap_m, s.place.component);
                let kind = EventKind::StopUnreachable;
                self.emit(
                    ctx,
                    kind,
                    now,
                    Some(id),
                    f64::from(snap_m),
                    f64::from(component),
                );
            }
            let s = &mut self.stops[i];
            s.remaining_m = m as f32;
            let id = s.plan.id;
            let announced = s.announced;
            let eta_change = eta_change.max(c.eta_change_share * (t - now));
            if t.is_finite() && (announced.is_nan() || (t - announced).abs() > eta_change) {
                s.announced = t;
                if !announced.is_nan() {
                    self.emit(ctx, EventKind::EtaChanged, now, Some(id), t, announced);
                    with_window(ctx, &self.stops[i]);
                }
            }
            // Risk before lateness: a stop that is both at once (assigned
            // already behind) says so in that order too.
            let s = &mut self.stops[i];
            if let Some(w) = s.plan.window {
                let p_late = table.p_later(routed, w.end - now, standing);
                let hold = confirm_for(&c, now, s.eta, w.end);
                let change = risk(&c, s.at_risk, p_late);
                if let Some(at_risk) = confirm(&mut s.risk_pending, change, s.at_risk, now, hold) {
                    s.at_risk = at_risk;
                    let kind = if at_risk {
                        EventKind::AtRisk
                    } else {
                        EventKind::RiskCleared
                    };
                    self.emit(ctx, kind, now, Some(id), p_late, w.end);
                }
            }
            let s = &mut self.stops[i];
            if let (Some(w), true) = (s.plan.window, t.is_finite())
                && let Some(late) = {
                    let hold = confirm_for(&c, now, t, w.end);
                    let change = lateness(&c, s.late, t, w.end);
                    confirm(&mut s.late_pending, change, s.late, now, hold)
                }
            {
                s.late = late;
                let kind = if late {
                    EventKind::Late
                } else {
                    EventKind::BackOnTime
                };
                self.emit(ctx, kind, now, Some(id), t, w.end);
                with_window(ctx, &self.stops[i]);
            }
            self.send_milestones(ctx, i, now, k);
            prev = Some(i);
            k += 1;
        }
    }

    /// The customer milestones stop `i` has reached (see
    /// [`super::milestones`]): for each remaining stop as its ETA is
    /// updated, in route order, and for a stop as it is arrived at.
    fn send_milestones(&mut self, ctx: &mut Ctx, i: usize, now: f64, stops_before: usize) {
        let s = &self.stops[i];
        if s.milestones.complete() {
            return;
        }
        let arriving_s = ctx.detect.arriving_s;
        let situation = Situation {
            under_way: self.motion.moving && now - self.motion.since >= ctx.detect.plan_settle_s,
            status: s.status,
            eta_in: s.eta - now,
            arriving_s,
        };
        let (id, eta, to_go) = (s.plan.id, s.eta, f64::from(s.remaining_m));
        for kind in self.stops[i].milestones.advance(&situation) {
            let reference = match kind {
                EventKind::OutForDelivery => stops_before as f64,
                EventKind::NextStop => to_go,
                _ => arriving_s,
            };
            self.emit(ctx, kind, now, Some(id), eta, reference);
            with_window(ctx, &self.stops[i]);
        }
    }

    // ------------------------------------------------------------- commands

    /// Applies a route command; `false` when it does not fit this vehicle's
    /// stops (the engine validated it against its registry, so this only
    /// happens when commands raced).
    pub fn on_command(&mut self, ctx: &mut Ctx, cmd: &Command, time: f64) -> bool {
        let ok = match cmd {
            // Zones reach the shards as a whole (`Msg::Zones`).
            Command::PutZones { .. } | Command::RemoveZones { .. } => return true,
            Command::Upkeep {
                serviced,
                odometer_m,
                ..
            } => {
                self.upkeep.record(time, *serviced, *odometer_m);
                return true;
            }
            // A rating changes nothing of the route: it is news only.
            Command::Rate { stop, rating, .. } => {
                let stars = f64::from(rating.stars);
                self.emit(ctx, EventKind::Rated, time, Some(*stop), stars, f64::NAN);
                return true;
            }
            Command::AssignRoute { stops, .. } => {
                let mut open: Vec<StopState> = Vec::new();
                let mut kept: Vec<StopState> = self.stops.drain(..).collect();
                for plan in stops {
                    match kept
                        .iter()
                        .position(|s| s.plan.id == plan.id && !s.status.is_closed())
                    {
                        Some(j) => {
                            let mut s = kept.remove(j);
                            if s.plan.window != plan.window {
                                // A new promise: a new attempt.
                                s.milestones.restart();
                                let (start, end) = plan
                                    .window
                                    .map_or((f64::NAN, f64::NAN), |w| (w.start, w.end));
                                let kind = EventKind::Rescheduled;
                                self.emit(ctx, kind, time, Some(plan.id), start, end);
                            }
                            s.plan = plan.clone();
                            open.push(s);
                        }
                        None => {
                            if let Some(s) = new_stop(ctx, plan) {
                                open.push(s);
                            }
                        }
                    }
                }
                self.stops = kept.into_iter().filter(|s| s.status.is_closed()).collect();
                self.stops.extend(open);
                true
            }
            Command::AddStop { stop, index, .. } => match new_stop(ctx, stop) {
                Some(s) if self.stops.iter().all(|x| x.plan.id != stop.id) => {
                    let closed = self.stops.iter().filter(|s| s.status.is_closed()).count();
                    let at = index.map_or(self.stops.len(), |i| (closed + i).min(self.stops.len()));
                    self.stops.insert(at, s);
                    true
                }
                _ => false,
            },
            Command::RemoveStop { stop, .. } => {
                match self
                    .stops
                    .iter()
                    .position(|s| s.plan.id == *stop && !s.status.is_closed())
                {
                    Some(i) => {
                        self.stops.remove(i);
                        if self.at_stop.is_some_and(|(id, _)| id == *stop) {
                            self.at_stop = None;
                        }
                        true
                    }
                    None => false,
                }
            }
            Command::Reorder { order, .. } => {
                let open: Vec<StopId> = self
                    .stops
                    .iter()
                    .filter(|s| !s.status.is_closed())
                    .map(|s| s.plan.id)
                    .collect();
                let mut sorted = order.clone();
                sorted.sort_unstable();
                let mut want = open.clone();
                want.sort_unstable();
                if sorted != want {
                    false
                } else {
                    let closed = self.stops.iter().filter(|s| s.status.is_closed()).count();
                    self.stops[closed..]
                        .sort_by_key(|s| order.iter().position(|&id| id == s.plan.id));
                    true
                }
            }
            Command::Complete { stop, proof, .. } => {
                self.close_stop(ctx, *stop, time, StopOutcome::Completed(proof.clone()))
            }
            Command::Fail { stop, reason, .. } => self.close_stop(
                ctx,
                *stop,
                time,
                StopOutcome::Failed {
                    reason: reason.clone(),
                },
            ),
        };
        if ok {
            self.trim_closed();
            self.mark_next();
            if self.leg.as_ref().is_some_and(|(to, _)| {
                self.next_index()
                    .is_none_or(|i| self.stops[i].plan.id != *to)
            }) {
                self.end_leg(ctx, time);
            }
            self.update_etas(ctx, time, false);
        }
        ok
    }

    fn close_stop(&mut self, ctx: &mut Ctx, stop: StopId, time: f64, outcome: StopOutcome) -> bool {
        let Some(i) = self
            .stops
            .iter()
            .position(|s| s.plan.id == stop && !s.status.is_closed())
        else {
            return false;
        };
        let completed = matches!(outcome, StopOutcome::Completed(_));
        let where_ = match &outcome {
            StopOutcome::Completed(ProofOfDelivery { pos: Some(p), .. }) => Some(*p),
            _ => self.placed.map(|p| p.point()),
        };
        let s = &mut self.stops[i];
        let distance = where_.map_or(f64::NAN, |p| haversine_m(p, s.road_pos()));
        let dwell = time - s.arrived_at;
        s.status = if completed {
            StopStatus::Completed
        } else {
            StopStatus::Failed
        };
        s.outcome = Some(Box::new(outcome));
        s.settle_lateness();
        if s.arrived_at.is_nan() {
            (s.eta, s.p10, s.p90) = (f64::NAN, f64::NAN, f64::NAN);
            s.eta_state = EtaState::Unknown;
            // Delivered where no arrival was seen: the completion is the
            // arrival the predictions are judged by.
            if completed {
                self.sampler.reached(self.id, stop, time, &mut ctx.outcomes);
            }
        }
        // Closed stops move in front of the open ones, in closing order.
        let s = self.stops.remove(i);
        let closed = self.stops.iter().filter(|s| s.status.is_closed()).count();
        self.stops.insert(closed, s);
        let (kind, milestone) = if completed {
            (EventKind::Completed, EventKind::Delivered)
        } else {
            (EventKind::Failed, EventKind::FailedAttempt)
        };
        self.emit(ctx, kind, time, Some(stop), distance, dwell);
        self.emit(ctx, milestone, time, Some(stop), distance, dwell);
        true
    }

    fn trim_closed(&mut self) {
        let closed = self.stops.iter().filter(|s| s.status.is_closed()).count();
        if closed > KEEP_CLOSED {
            self.stops.drain(..closed - KEEP_CLOSED);
        }
    }

    // ----------------------------------------------------------------- ticks

    /// No ping for too long: offline, and the matcher's window is finalised
    /// (its path feeds traffic; memory is released until the next ping).
    /// True when the vehicle went offline.
    pub fn check_offline(&mut self, ctx: &mut Ctx, now: f64) -> bool {
        let Some((last, _)) = self.last_seen else {
            return false;
        };
        if !self.online || now - last < ctx.detect.offline_s {
            return false;
        }
        self.online = false;
        ctx.matcher.flush(&mut self.track, &mut ctx.out);
        self.take_path(ctx, MatchStatus::Matched);
        self.traversals.close(&mut ctx.observations);
        self.track.release_buffers();
        let threshold = ctx.detect.offline_s;
        self.emit(ctx, EventKind::Offline, now, None, now - last, threshold);
        true
    }

    /// Gives back buffer room the matcher's window no longer needs (a tick
    /// does it, so no ping pays for a reallocation).
    pub fn trim_buffers(&mut self) {
        self.track.trim_buffers();
        // Routes only grow by commands (a stop added), so the room of stops
        // that closed and were dropped can go back at once.
        let trim = |cap: usize, len: usize| cap > len + len / 2 + 1;
        if trim(self.stops.capacity(), self.stops.len()) {
            self.stops.shrink_to_fit();
        }
        if trim(self.stop_legs.capacity(), self.stop_legs.len()) {
            self.stop_legs.shrink_to_fit();
        }
    }

    /// Catches up with a metric installed since the vehicle's last ping:
    /// its paths are retimed (the same edges, new times: cheap, and the
    /// ETAs are right at once), and those that got slower by more than
    /// the threshold are searched again a little later, at a phase per
    /// vehicle, so one metric update does not make the whole fleet search
    /// at the same moment. Done at the next ping rather than when the
    /// metric arrives, so installing it never stalls the shard.
    fn catch_up_metric(&mut self, ctx: &mut Ctx, now: f64) {
        if self.metric_seen == ctx.metric_version {
            return;
        }
        self.metric_seen = ctx.metric_version;
        let threshold = ctx.eta.reroute_change;
        // Only a path that got slower can have a better alternative now (one
        // that got faster is still at least as good as it was).
        let moved = |before: f64, after: f64| after - before > threshold * before.max(1.0);
        let metric = ctx.router.metric();
        // How much the new metric moved each stop's routed time to go from
        // here (the stops in route order: the leg's, then each stop leg's
        // end), so the predictions noted for windows are revised with it.
        let mut revised: Option<(StopId, f64)> = None;
        if let Some((stop, leg)) = self.leg.as_mut() {
            let before = leg.total_s();
            ctx.counters.retimes += 1;
            let after = leg.retime(ctx.graph, metric);
            if moved(before, after) {
                self.leg_stale = true;
            }
            // The part of the leg still to drive moved in proportion.
            let to_go = self.to_next.map_or(before, |(s, _)| f64::from(s));
            let share = (to_go / before.max(1.0)).min(1.0);
            revised = Some((*stop, (after - before) * share));
        }
        if let Some((stop, by)) = revised {
            self.sampler.revise(stop, by);
        }
        for ((from, to), leg) in &mut self.stop_legs {
            let Some(leg) = leg.as_mut() else {
                revised = None;
                continue;
            };
            let before = leg.seconds;
            ctx.counters.retimes += 1;
            let after = leg.retime(ctx.graph, metric);
            if moved(before, after) {
                leg.stale = true;
            }
            revised = match revised {
                Some((tail, by)) if tail == *from => Some((*to, by + after - before)),
                _ => None,
            };
            if let Some((stop, by)) = revised {
                self.sampler.revise(stop, by);
            }
        }
        let any_stale = self.leg_stale
            || self
                .stop_legs
                .iter()
                .any(|(_, l)| l.as_ref().is_some_and(|l| l.stale));
        if any_stale && !self.stale_from.is_finite() {
            self.stale_from = now + ctx.eta.spread(self.id);
        }
    }

    /// Searches again the legs a metric update made stale.
    fn reroute_stale(&mut self, ctx: &mut Ctx, now: f64) {
        if now < self.stale_from {
            return;
        }
        self.stale_from = f64::INFINITY;
        if std::mem::take(&mut self.leg_stale)
            && let Some(i) = self.next_index()
            && self.leg.is_some()
        {
            ctx.counters.traffic_reroutes += 1;
            self.reroute(ctx, i, now);
        }
        for j in 0..self.stop_legs.len() {
            if !self.stop_legs[j].1.as_ref().is_some_and(|l| l.stale) {
                continue;
            }
            let (a, b) = self.stop_legs[j].0;
            let place = |id| self.stops.iter().find(|s| s.plan.id == id).map(|s| s.place);
            if let (Some(pa), Some(pb)) = (place(a), place(b)) {
                ctx.counters.traffic_reroutes += 1;
                self.stop_legs[j].1 = ctx
                    .router
                    .route(&pa.positions(), &pb.positions())
                    .map(|r| StopLeg::from_route(ctx.graph, ctx.router.metric(), r));
            }
        }
    }

    // -------------------------------------------------------------- snapshot

    pub fn fill_snapshot(&self, s: &mut VehicleSnapshot) {
        s.vehicle = self.id;
        s.time = self.last_seen.map_or(f64::NAN, |l| l.0);
        s.status = self.last_status;
        match self.placed {
            Some(p) => {
                s.pos = p.point();
                s.edge = p.edge;
                s.offset_m = p.offset_m();
                s.matched_time = p.time;
            }
            None => {
                s.pos = LatLon::new(f64::NAN, f64::NAN);
                s.edge = u32::MAX;
                s.matched_time = f64::NAN;
            }
        }
        s.speed_mps = self.speed_mps;
        s.heading_deg = self.heading_deg;
        s.moving = self.motion.moving;
        s.online = self.online;
        s.odometer_m = self.odometer_m;
        (s.lifetime_m, s.moving_s) = (self.upkeep.lifetime_m, self.upkeep.moving_s);
        s.service = self.upkeep.service;
        s.zones.clear();
        s.zones.extend(self.zones.inside());
        s.next_stop = self.next_index().map(|i| self.stops[i].plan.id);
        s.off_route = self.off_route.off;
        s.stalled = self.stalled;
        s.stops.clear();
        let mut before = 0;
        for st in &self.stops {
            s.stops.push(StopEta {
                stop: st.plan.id,
                status: st.status,
                eta: st.eta,
                eta_p10: st.p10,
                eta_p90: st.p90,
                eta_state: st.eta_state,
                snap_m: st.place.snap_m,
                snap_component: st.place.component,
                remaining_m: f64::from(st.remaining_m),
                stops_before: if st.status.is_remaining() { before } else { 0 },
                late: st.late,
                at_risk: st.at_risk,
                window_end: st.plan.window.map_or(f64::NAN, |w| w.end),
            });
            if st.status.is_remaining() {
                before += 1;
            }
        }
    }
}

/// Gives the event just emitted, whose value is `stop`'s ETA, the stop's
/// arrival window (to the second).
fn with_window(ctx: &mut Ctx, stop: &StopState) {
    if let Some(e) = ctx.events.last_mut()
        && stop.p10.is_finite()
        && stop.p90.is_finite()
    {
        // Whole seconds: what the event log keeps, so an event read back
        // from it is the event as published.
        e.window_s = [
            (stop.eta - stop.p10).round() as f32,
            (stop.p90 - stop.eta).round() as f32,
        ];
    }
}

/// A stop snapped to its road; `None` (counted) when no road is near.
fn new_stop(ctx: &mut Ctx, plan: &StopPlan) -> Option<StopState> {
    let Some(place) = StopPlace::snap(ctx.graph, plan.pos, ctx.eta.stop_snap_m, &mut ctx.near)
    else {
        ctx.counters.unsnappable_stops += 1;
        return None;
    };
    let p = place.positions()[0];
    Some(StopState {
        plan: plan.clone(),
        place,
        road_pos: ctx.graph.point_on_edge(p.edge, p.offset_m).into(),
        status: StopStatus::Pending,
        eta: f64::NAN,
        p10: f64::NAN,
        p90: f64::NAN,
        eta_state: EtaState::Unknown,
        remaining_m: f32::NAN,
        announced: f64::NAN,
        late: false,
        at_risk: false,
        late_pending: Pending::default(),
        risk_pending: Pending::default(),
        milestones: Milestones::default(),
        arrived_at: f64::NAN,
        outcome: None,
    })
}
