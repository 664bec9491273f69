//! Between the engine's types and their wire form: units (seconds ↔ ms,
//! degrees ↔ 1e-7 degrees), optional values, and checking what a client
//! sent before it reaches the engine (a stop at latitude 91° is a
//! `bad_value` error here, not a surprise later).

use lastmile_engine::MatchStatus;
use lastmile_engine::fleet::{
    CommandError, EtaState, Event, EventKind, PathPiece, ProofOfDelivery, StopEta, StopId,
    StopOutcome, StopPlan, StopStatus, StopView, VehicleSnapshot,
};
use lastmile_roadgraph::{Graph, LatLon};

use crate::ids::Kind;
use crate::protocol::{
    ErrorCode, EtaStateCode, MATCH_BREAK, NO_TIME, PATH_BREAK, PATH_INTERPOLATED, StopStatusCode,
    WireEta, WireEvent, WirePathPoint, WireProof, WireStop, WireStopEta, WireStopView, WireVehicle,
};

/// Names the engine's ids as the caller sees them (its fleet's names).
pub type Namer<'a> = &'a dyn Fn(Kind, u64) -> String;

pub fn ms(t: f64) -> i64 {
    if t.is_finite() {
        (t * 1000.0).round() as i64
    } else {
        NO_TIME
    }
}

pub fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

pub fn e7(deg: f64) -> i32 {
    if deg.is_finite() {
        (deg * 1e7).round() as i32
    } else {
        0
    }
}

/// A position from 1e-7 degrees, if in range.
pub fn latlon(lat_e7: i32, lon_e7: i32) -> Option<LatLon> {
    ((-900_000_000..=900_000_000).contains(&lat_e7)
        && (-1_800_000_000..=1_800_000_000).contains(&lon_e7))
    .then(|| LatLon::new(lat_e7 as f64 * 1e-7, lon_e7 as f64 * 1e-7))
}

pub fn status_code(s: StopStatus) -> StopStatusCode {
    match s {
        StopStatus::Pending => StopStatusCode::Pending,
        StopStatus::Next => StopStatusCode::Next,
        StopStatus::Arrived => StopStatusCode::Arrived,
        StopStatus::Completed => StopStatusCode::Completed,
        StopStatus::Failed => StopStatusCode::Failed,
    }
}

fn match_code(s: MatchStatus) -> u8 {
    match s {
        MatchStatus::Matched => 1,
        MatchStatus::Reset => 2,
        // Protocol version 1 knows no `break`: the codec sends it as a reset.
        MatchStatus::Break => MATCH_BREAK,
        MatchStatus::Unmatched => 3,
        MatchStatus::Outlier => 4,
        MatchStatus::OutOfOrder => 5,
        MatchStatus::Duplicate => 6,
        MatchStatus::Invalid => 7,
    }
}

/// A stop's arrival estimate. The window is not computed yet: its times
/// are [`NO_TIME`].
fn eta(s: &StopEta) -> WireEta {
    WireEta {
        state: match s.eta_state {
            EtaState::Known => EtaStateCode::Known,
            EtaState::Unreachable => EtaStateCode::Unreachable,
            EtaState::Unknown => EtaStateCode::Unknown,
        },
        eta_ms: ms(s.eta),
        p10_ms: NO_TIME,
        p90_ms: NO_TIME,
    }
}

fn stop_eta(s: &StopEta, name: Namer<'_>) -> WireStopEta {
    WireStopEta {
        stop: name(Kind::Stop, s.stop),
        eta: eta(s),
        window_end_ms: ms(s.window_end),
        remaining_m: s.remaining_m as f32,
        stops_before: s.stops_before,
        status: status_code(s.status),
        late: s.late,
    }
}

pub fn vehicle(v: &VehicleSnapshot, graph: &Graph, name: Namer<'_>) -> WireVehicle {
    let has_position = v.pos.lat.is_finite() && v.pos.lon.is_finite();
    let on_edge = (v.edge as usize) < graph.num_edges();
    WireVehicle {
        vehicle: name(Kind::Vehicle, v.vehicle),
        time_ms: ms(v.time),
        matched_time_ms: ms(v.matched_time),
        lat_e7: e7(v.pos.lat),
        lon_e7: e7(v.pos.lon),
        has_position,
        edge: v.edge,
        way_id: if on_edge { graph.way_id(v.edge) } else { 0 },
        offset_m: v.offset_m as f32,
        speed_mps: v.speed_mps as f32,
        heading_deg: v.heading_deg as f32,
        odometer_m: v.odometer_m,
        match_status: if v.time.is_finite() {
            match_code(v.status)
        } else {
            0
        },
        moving: v.moving,
        online: v.online,
        off_route: v.off_route,
        next_stop: v.next_stop.map(|s| name(Kind::Stop, s)),
        stops: v.stops.iter().map(|s| stop_eta(s, name)).collect(),
    }
}

/// A stop's view; the vehicle's position only when `reveal_vehicle`.
pub fn stop_view(id: u64, s: &StopView, reveal_vehicle: bool, name: Namer<'_>) -> WireStopView {
    let plan = &s.record.plan;
    let status = status_code(s.status());
    let (late, stops_before, when, remaining) = match &s.eta {
        Some(e) => (e.late, e.stops_before, eta(e), e.remaining_m),
        None => (false, 0, WireEta::v1(NO_TIME), f64::NAN),
    };
    let outcome_text = match &s.record.outcome {
        Some(StopOutcome::Failed { reason }) => reason.clone(),
        Some(StopOutcome::Completed(p)) => p.note.clone().unwrap_or_default(),
        None => String::new(),
    };
    let vehicle_known = s.vehicle_pos.lat.is_finite() && s.vehicle_pos.lon.is_finite();
    WireStopView {
        stop: name(Kind::Stop, id),
        vehicle: name(Kind::Vehicle, s.record.vehicle),
        status,
        late,
        stops_before,
        eta: when,
        remaining_m: remaining as f32,
        lat_e7: e7(plan.pos.lat),
        lon_e7: e7(plan.pos.lon),
        window_start_ms: plan.window.map_or(NO_TIME, |w| ms(w.start)),
        window_end_ms: plan.window.map_or(NO_TIME, |w| ms(w.end)),
        service_s: plan.service_s as f32,
        snap_m: s.eta.as_ref().map_or(f32::NAN, |e| e.snap_m),
        snap_component: s.eta.as_ref().map_or(0, |e| e.snap_component),
        vehicle_pos: (reveal_vehicle && vehicle_known).then(|| {
            (
                e7(s.vehicle_pos.lat),
                e7(s.vehicle_pos.lon),
                ms(s.vehicle_time),
            )
        }),
        closed_ms: s.record.closed_at.map_or(NO_TIME, ms),
        customer_ref: plan.customer_ref.as_deref().unwrap_or_default().to_string(),
        outcome_text,
    }
}

/// A dispatcher's stop, checked, under the engine id its name got.
pub fn stop_plan(s: &WireStop, id: StopId) -> Result<StopPlan, (ErrorCode, String)> {
    let window = match (s.window_start_ms, s.window_end_ms) {
        (NO_TIME, NO_TIME) => None,
        (a, b) => Some((secs(a), secs(b))),
    };
    let pos = latlon(s.lat_e7, s.lon_e7);
    lastmile_node::dispatch::plan(
        &s.id,
        id,
        pos,
        window,
        f64::from(s.service_s),
        &s.customer_ref,
    )
    .map_err(|r| (ErrorCode::of_refusal(r.kind), r.message))
}

pub fn proof(p: &WireProof) -> Result<ProofOfDelivery, (ErrorCode, String)> {
    let pos = match p.pos_e7 {
        Some((lat, lon)) => Some(latlon(lat, lon).ok_or((
            ErrorCode::BadValue,
            "proof position out of range".to_string(),
        ))?),
        None => None,
    };
    let opt = |s: &String| (!s.is_empty()).then(|| s.clone());
    Ok(ProofOfDelivery {
        photo_refs: p.photo_refs.clone(),
        signature_ref: opt(&p.signature_ref),
        note: opt(&p.note),
        pos,
    })
}

/// A matched path as timed points along the road geometry, clipped to the
/// time window `[from, to]` (s), at most `max` points (whole pieces only);
/// returns the points and how many pieces they cover.
///
/// Every point but the window's edges is one of the path's own, the same
/// whatever window is asked: its time is spread over its piece in
/// proportion to the distance driven. A piece that does not continue the
/// previous one (another edge not joined to it, or a jump) starts with
/// [`PATH_BREAK`], as it does in every window that holds it.
/// Where the window cuts between two points, a point interpolated at the
/// window's edge is added, flagged [`PATH_INTERPOLATED`]. A stand gives
/// two points at one place (arrival and departure), and no point repeats
/// the one before it.
pub fn path_points(
    graph: &Graph,
    pieces: &[PathPiece],
    (from, to): (f64, f64),
    max: usize,
) -> (Vec<WirePathPoint>, usize) {
    let mut out: Vec<WirePathPoint> = Vec::new();
    let mut prev: Option<&PathPiece> = None;
    // The last point of the path seen before the window, to interpolate
    // the window's first point from.
    let mut before: Option<WirePathPoint> = None;
    let (from_ms, to_ms) = (ms_floor(from), ms_ceil(to));
    let mut piece_points = Vec::new();
    for (used, p) in pieces.iter().enumerate() {
        if p.edge as usize >= graph.num_edges() {
            continue;
        }
        let joined = prev.is_some_and(|q| {
            let same_edge = q.edge == p.edge && (p.from_m - q.to_m).abs() < 1.0;
            let next_edge = graph.head(q.edge) == graph.tail(p.edge)
                && q.to_m >= graph.length_m(q.edge) - 1.0
                && p.from_m < 1.0;
            same_edge || next_edge
        });
        prev = Some(p);
        // A stand is a run of pieces of no length: only its last gives a
        // point (the departure; the arrival ends the piece before it).
        let stands = |q: &PathPiece| q.edge == p.edge && q.to_m - q.from_m <= 0.0;
        if joined
            && stands(p)
            && pieces
                .get(used + 1)
                .is_some_and(|n| stands(n) && n.from_m == p.to_m)
        {
            continue;
        }
        piece_points.clear();
        own_points(graph, p, joined, &mut piece_points);
        if out.len() + piece_points.len() + 2 > max {
            return (out, used);
        }
        for &pt in &piece_points {
            if pt.time_ms < from_ms {
                before = Some(pt);
                continue;
            }
            if pt.time_ms > to_ms {
                // Cut at the window's end, then nothing more.
                if let Some(last) = out.last().copied()
                    && last.time_ms < to_ms
                    && pt.flags & PATH_BREAK == 0
                {
                    push(&mut out, between(&last, &pt, to_ms));
                }
                return (out, pieces.len());
            }
            if out.is_empty() {
                // The window's first point: interpolated at its start when
                // the window cuts into a stretch of path.
                if let Some(b) = before
                    && pt.time_ms > from_ms
                    && pt.flags & PATH_BREAK == 0
                {
                    push(&mut out, between(&b, &pt, from_ms));
                }
            }
            push(&mut out, pt);
        }
    }
    (out, pieces.len())
}

/// A piece's own points (its first only when it does not continue the
/// previous piece), timed in proportion to the distance driven.
fn own_points(graph: &Graph, p: &PathPiece, joined: bool, out: &mut Vec<WirePathPoint>) {
    let geometry = graph.edge_geometry_between(p.edge, p.from_m, p.to_m.max(p.from_m));
    let mut along = vec![0.0];
    for w in geometry.windows(2) {
        let d = along.last().copied().unwrap_or(0.0);
        along.push(d + lastmile_roadgraph::geo::haversine_m(w[0], w[1]));
    }
    let total = along.last().copied().unwrap_or(0.0);
    let skip = usize::from(joined);
    for (i, (pt, d)) in geometry.iter().zip(&along).enumerate().skip(skip) {
        // A piece of no length (a stand) ends where it began, at its end time.
        let share = if total > 1e-9 {
            d / total
        } else {
            f64::from(u8::from(i > 0))
        };
        let t = p.t_start + (p.t_end - p.t_start) * share;
        out.push(WirePathPoint {
            time_ms: ms(t),
            lat_e7: e7(pt.lat),
            lon_e7: e7(pt.lon),
            edge: p.edge,
            flags: if i == 0 && !joined { PATH_BREAK } else { 0 },
        });
    }
}

/// Appends a point unless it repeats the last one (same place, same time).
fn push(out: &mut Vec<WirePathPoint>, pt: WirePathPoint) {
    if out
        .last()
        .is_some_and(|l| (l.time_ms, l.lat_e7, l.lon_e7) == (pt.time_ms, pt.lat_e7, pt.lon_e7))
    {
        return;
    }
    out.push(pt);
}

/// The point at `time_ms` between two consecutive points of the path.
fn between(a: &WirePathPoint, b: &WirePathPoint, time_ms: i64) -> WirePathPoint {
    let span = (b.time_ms - a.time_ms).max(1) as f64;
    let f = ((time_ms - a.time_ms) as f64 / span).clamp(0.0, 1.0);
    let lerp = |x: i32, y: i32| (f64::from(x) + (f64::from(y) - f64::from(x)) * f).round() as i32;
    WirePathPoint {
        time_ms,
        lat_e7: lerp(a.lat_e7, b.lat_e7),
        lon_e7: lerp(a.lon_e7, b.lon_e7),
        edge: b.edge,
        flags: PATH_INTERPOLATED,
    }
}

/// A window's bounds in whole milliseconds, outward (open bounds stay open).
fn ms_floor(t: f64) -> i64 {
    ms_rounded(t, f64::floor)
}

fn ms_ceil(t: f64) -> i64 {
    ms_rounded(t, f64::ceil)
}

fn ms_rounded(t: f64, round: fn(f64) -> f64) -> i64 {
    match t {
        t if t.is_finite() => round(t * 1000.0) as i64,
        t if t < 0.0 => i64::MIN,
        _ => i64::MAX,
    }
}

pub fn event(id: u64, e: &Event, name: Namer<'_>) -> WireEvent {
    WireEvent {
        id,
        vehicle: name(Kind::Vehicle, e.vehicle),
        seq: e.seq,
        stop: e.stop.map(|s| name(Kind::Stop, s)),
        zone: None,
        time_ms: ms(e.time),
        kind: e.kind as u8,
        lat_e7: e7(e.pos.lat),
        lon_e7: e7(e.pos.lon),
        value: e.value,
        reference: e.reference,
    }
}

/// The name of an event kind code (for CLIs; `None` for codes this build
/// does not know).
pub fn event_kind_name(code: u8) -> Option<&'static str> {
    EventKind::ALL
        .into_iter()
        .find(|k| *k as u8 == code)
        .map(EventKind::as_str)
}

pub fn command_error(e: &CommandError) -> ErrorCode {
    match e {
        CommandError::UnknownStop(_) => ErrorCode::UnknownStop,
        CommandError::WrongVehicle { .. } => ErrorCode::WrongVehicle,
        CommandError::DuplicateStop(_) => ErrorCode::DuplicateStop,
        CommandError::StopClosed(_) => ErrorCode::StopClosed,
        CommandError::OffRoad { .. } => ErrorCode::OffRoad,
        CommandError::BadOrder => ErrorCode::BadOrder,
        CommandError::NotFinite => ErrorCode::BadValue,
        CommandError::Overloaded => ErrorCode::Overloaded,
        // The store refused the write (disk full, I/O error): nothing was
        // applied, the client may retry.
        CommandError::Journal(_) => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_are_checked_before_the_engine_sees_them() {
        let good = WireStop {
            id: "A-1".into(),
            lat_e7: 437_300_000,
            lon_e7: 74_200_000,
            window_start_ms: 1_000_000,
            window_end_ms: 2_000_000,
            service_s: 60.0,
            customer_ref: "A-1".into(),
        };
        let p = stop_plan(&good, 1).unwrap();
        assert_eq!(p.window.unwrap().end, 2_000.0);
        assert_eq!(p.customer_ref.as_deref(), Some("A-1"));
        let bad = |f: fn(&mut WireStop)| {
            let mut s = good.clone();
            f(&mut s);
            stop_plan(&s, 1).unwrap_err().0
        };
        assert_eq!(bad(|s| s.lat_e7 = 910_000_000), ErrorCode::BadValue);
        assert_eq!(bad(|s| s.window_end_ms = 1), ErrorCode::BadValue);
        assert_eq!(bad(|s| s.service_s = f32::NAN), ErrorCode::BadValue);
        assert_eq!(bad(|s| s.service_s = -1.0), ErrorCode::BadValue);
        let mut open = good.clone();
        open.window_start_ms = NO_TIME;
        open.window_end_ms = NO_TIME;
        assert!(stop_plan(&open, 1).unwrap().window.is_none());
        assert_eq!(ms(f64::NAN), NO_TIME);
        assert_eq!(e7(f64::INFINITY), 0);
    }

    /// A drive along connected edges of a small town: pieces a second or
    /// two long, a stand (zero length, 30 s) in the middle, and a jump to
    /// an unconnected edge after a gap.
    fn drive(g: &Graph) -> Vec<PathPiece> {
        let mut pieces = Vec::new();
        let mut t = 1_000.0;
        let mut e = 0u32;
        let piece = |e: u32, from_m: f64, to_m: f64, t0: f64, t1: f64| PathPiece {
            vehicle: 1,
            edge: e,
            from_m,
            to_m,
            t_start: t0,
            t_end: t1,
        };
        for k in 0..12 {
            let len = g.length_m(e);
            let half = len / 2.0;
            pieces.push(piece(e, 0.0, half, t, t + 1.5));
            t += 1.5;
            if k == 5 {
                // Standing half way along: three zero-length pieces.
                for _ in 0..3 {
                    pieces.push(piece(e, half, half, t, t + 10.0));
                    t += 10.0;
                }
            }
            pieces.push(piece(e, half, len, t, t + 1.5));
            t += 1.5;
            let next = g.out_edges(g.head(e)).find(|&n| g.head(n) != g.tail(e));
            e = next.unwrap_or_else(|| g.out_edges(g.head(e)).next().unwrap());
        }
        // A jump after a gap: an edge that does not continue the last one.
        let far = (0..g.num_edges() as u32)
            .rev()
            .find(|&x| g.tail(x) != g.head(e))
            .unwrap();
        pieces.push(piece(far, 0.0, g.length_m(far), t + 60.0, t + 65.0));
        pieces
    }

    #[test]
    fn history_windows_are_the_full_path_clipped_exactly() {
        let g = Graph::from_data(&lastmile_roadgraph::synthetic::generate_city(
            &lastmile_roadgraph::CityParams::new(1_000, 2),
        ));
        let pieces = drive(&g);
        let open = (f64::NEG_INFINITY, f64::INFINITY);
        let (full, used) = path_points(&g, &pieces, open, 100_000);
        assert_eq!(used, pieces.len());
        assert!(full.iter().all(|p| p.flags & PATH_INTERPOLATED == 0));
        assert_eq!(full.iter().filter(|p| p.flags & PATH_BREAK != 0).count(), 2);
        // No point repeats the one before it; a stand keeps two points.
        for w in full.windows(2) {
            assert!(w[0].time_ms < w[1].time_ms, "{w:?}");
            assert_ne!(w, &[w[1], w[1]][..]);
        }
        for w in full.windows(3) {
            let place = |p: &WirePathPoint| (p.lat_e7, p.lon_e7);
            assert!(
                !(place(&w[0]) == place(&w[1]) && place(&w[1]) == place(&w[2])),
                "a run of three at one place: {w:?}"
            );
        }
        let (t0, t1) = (pieces[0].t_start, pieces.last().unwrap().t_end);
        for k in 0..60 {
            let from = t0 - 5.0 + (t1 - t0 + 10.0) * f64::from(k) / 60.0;
            for span in [0.7, 3.0, 17.3, 45.0] {
                let to = from + span;
                // What the store gives: the pieces overlapping the window,
                // after the last one that ended before it.
                let first = pieces
                    .iter()
                    .position(|p| p.t_end >= from)
                    .unwrap_or(pieces.len());
                let overlapping: Vec<PathPiece> = pieces[first.saturating_sub(1)..]
                    .iter()
                    .filter(|p| p.t_start <= to)
                    .copied()
                    .collect();
                let (got, _) = path_points(&g, &overlapping, (from, to), 100_000);
                let (lo, hi) = (ms_floor(from), ms_ceil(to));
                let inside: Vec<WirePathPoint> = full
                    .iter()
                    .filter(|p| (lo..=hi).contains(&p.time_ms))
                    .copied()
                    .collect();
                let own: Vec<WirePathPoint> = got
                    .iter()
                    .filter(|p| p.flags & PATH_INTERPOLATED == 0)
                    .copied()
                    .collect();
                assert_eq!(own, inside, "window {from}..{to}: the path's own points");
                for (i, p) in got.iter().enumerate() {
                    assert!(
                        (lo..=hi).contains(&p.time_ms),
                        "outside {from}..{to}: {p:?}"
                    );
                    if p.flags & PATH_INTERPOLATED != 0 {
                        let edge =
                            i == 0 && p.time_ms == lo || i == got.len() - 1 && p.time_ms == hi;
                        assert!(edge, "interpolated inside the window: {p:?}");
                    }
                }
            }
        }
    }
}
