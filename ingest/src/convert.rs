//! Between the engine's types and their wire form: units (seconds ↔ ms,
//! degrees ↔ 1e-7 degrees), optional values, and checking what a client
//! sent before it reaches the engine (a stop at latitude 91° is a
//! `bad_value` error here, not a surprise later).

use lastmile_engine::MatchStatus;
use lastmile_engine::fleet::{
    EtaState, Event, EventKind, ProofOfDelivery, StopEta, StopId, StopOutcome, StopPlan,
    StopStatus, StopView, VehicleSnapshot,
};
use lastmile_roadgraph::{Graph, LatLon};

use crate::ids::Kind;
use crate::protocol::{
    ErrorCode, EtaStateCode, MATCH_BREAK, NO_TIME, StopStatusCode, WireEta, WireEvent, WireProof,
    WireStop, WireStopEta, WireStopView, WireVehicle,
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

/// A stop's arrival estimate: the P50 and the P10–P90 window around it.
fn eta(s: &StopEta) -> WireEta {
    WireEta {
        state: match s.eta_state {
            EtaState::Known => EtaStateCode::Known,
            EtaState::Unreachable => EtaStateCode::Unreachable,
            EtaState::Unknown => EtaStateCode::Unknown,
        },
        eta_ms: ms(s.eta),
        p10_ms: ms(s.eta_p10),
        p90_ms: ms(s.eta_p90),
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
        at_risk: s.at_risk,
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
        lifetime_odometer_m: v.lifetime_m,
        moving_s: v.moving_s,
        service_since_ms: ms(v.service.since),
        service_driven_m: v.service.driven_m,
        service_moving_s: v.service.moving_s,
        service_due: v.service.due,
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
        at_risk: s.eta.as_ref().is_some_and(|e| e.at_risk),
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

pub fn event(id: u64, e: &Event, name: Namer<'_>) -> WireEvent {
    WireEvent {
        id,
        vehicle: name(Kind::Vehicle, e.vehicle),
        seq: e.seq,
        stop: e.stop.map(|s| name(Kind::Stop, s)),
        zone: e.zone.map(|z| name(Kind::Zone, z)),
        time_ms: ms(e.time),
        kind: e.kind as u8,
        lat_e7: e7(e.pos.lat),
        lon_e7: e7(e.pos.lon),
        value: e.value,
        reference: e.reference,
        eta_p10_ms: e.eta_window().map_or(NO_TIME, |w| ms(w.0)),
        eta_p90_ms: e.eta_window().map_or(NO_TIME, |w| ms(w.1)),
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
}
