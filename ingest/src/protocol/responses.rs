//! Replies' byte layouts (server → client), per protocol version. Version 2
//! names vehicles and stops by `str`, gives each ETA its state and window,
//! a stop its snapping, an event its zone, and a match status `break`.

use super::codec::{DecodeError, Reader, write_frame};
use super::records::{PATH_POINT_LEN, decode_point, encode_point, flag, get_id, put_id};
use super::{
    EtaStateCode, FrameType, MATCH_BREAK, MATCH_STATUS_NAMES, MAX_HISTORY_POINTS, MAX_IN_BOX,
    MAX_LIST_LEN, MAX_STR_LEN, NO_TIME, Response, StopStatusCode, Version, WireEta, WireEvent,
    WireFound, WireStopEta, WireStopView, WireVehicle,
};

/// The match status version 1 shows for `break`: `reset` (the match starts again).
const V1_RESET: u8 = 2;

impl Response {
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::Vehicle(_) => FrameType::Vehicle,
            Self::Stop(_) => FrameType::Stop,
            Self::Vehicles { .. } => FrameType::Vehicles,
            Self::History { .. } => FrameType::History,
            Self::Ok => FrameType::Ok,
            Self::Zones { .. } => FrameType::Zones,
            Self::TrackingToken { .. } => FrameType::TrackingToken,
            Self::Subscribed { .. } => FrameType::Subscribed,
            Self::Events(_) => FrameType::Events,
            Self::Lost { .. } => FrameType::Lost,
            Self::Stats(_) => FrameType::Stats,
            Self::Error { .. } => FrameType::Error,
        }
    }

    pub fn encode(&self, v: Version, out: &mut Vec<u8>) {
        write_frame(out, self.frame_type(), |w| match self {
            Self::Vehicle(x) => {
                put_id(w, v, &x.vehicle);
                w.i64(x.time_ms).i64(x.matched_time_ms);
                w.i32(x.lat_e7).i32(x.lon_e7).u32(x.edge).i64(x.way_id);
                w.f32(x.offset_m)
                    .f32(x.speed_mps)
                    .f32(x.heading_deg)
                    .f64(x.odometer_m);
                let flags = x.has_position as u8
                    | (x.moving as u8) << 1
                    | (x.online as u8) << 2
                    | (x.off_route as u8) << 3
                    | (x.next_stop.is_some() as u8) << 4;
                let status = match v {
                    Version::V1 if x.match_status == MATCH_BREAK => V1_RESET,
                    _ => x.match_status,
                };
                w.u8(status).u8(flags).u16(0);
                match v {
                    Version::V1 => {
                        put_id(w, v, x.next_stop.as_deref().unwrap_or("0"));
                    }
                    Version::V2 | Version::V3 | Version::V4 => {
                        w.str(x.next_stop.as_deref().unwrap_or(""));
                    }
                }
                w.count(x.stops.len());
                for s in &x.stops {
                    s.encode(v, w);
                }
                if v >= Version::V4 {
                    w.f64(x.lifetime_odometer_m).f64(x.moving_s);
                    w.i64(x.service_since_ms)
                        .f64(x.service_driven_m)
                        .f64(x.service_moving_s)
                        .u8(x.service_due);
                }
            }
            Self::Stop(s) => {
                put_id(w, v, &s.stop);
                put_id(w, v, &s.vehicle);
                let (vlat, vlon, vt) = s.vehicle_pos.unwrap_or((0, 0, NO_TIME));
                w.u8(s.status as u8).u8(s.late as u8
                    | (s.vehicle_pos.is_some() as u8) << 1
                    | ((v >= Version::V3 && s.at_risk) as u8) << 2);
                match v {
                    Version::V1 => w.u16(0),
                    Version::V2 | Version::V3 | Version::V4 => w.u8(s.eta.state as u8).u8(0),
                };
                w.u32(s.stops_before).i64(s.eta.eta_ms);
                if v >= Version::V2 {
                    w.i64(s.eta.p10_ms).i64(s.eta.p90_ms);
                }
                w.f32(s.remaining_m).i32(s.lat_e7).i32(s.lon_e7);
                w.i64(s.window_start_ms)
                    .i64(s.window_end_ms)
                    .f32(s.service_s);
                if v >= Version::V2 {
                    w.f32(s.snap_m).u32(s.snap_component);
                }
                w.i32(vlat).i32(vlon).i64(vt).i64(s.closed_ms);
                w.str(&s.customer_ref).str(&s.outcome_text);
            }
            Self::Vehicles { truncated, found } => {
                w.u8(*truncated as u8).u8(0).u16(0).count(found.len());
                for f in found {
                    f.encode(v, w);
                }
            }
            Self::History { truncated, points } => {
                w.u8(*truncated as u8).u8(0).u16(0).count(points.len());
                for p in points {
                    encode_point(p, w);
                }
            }
            Self::Ok => {}
            Self::Zones { geojson } => {
                w.text(geojson);
            }
            Self::TrackingToken { token, expires_ms } => {
                w.i64(*expires_ms).str(token);
            }
            Self::Subscribed { next_id } => {
                w.u64(*next_id);
            }
            Self::Events(events) => {
                w.count(events.len());
                for e in events {
                    e.encode(v, w);
                }
            }
            Self::Lost { count } => {
                w.u64(*count);
            }
            Self::Stats(pairs) => {
                w.count(pairs.len());
                for (k, n) in pairs {
                    w.str(k).u64(*n);
                }
            }
            Self::Error { code, message } => {
                w.u16(*code).str(message);
            }
        });
    }

    pub fn decode(v: Version, kind: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        let t = FrameType::from_u16(kind).ok_or(DecodeError::UnknownType(kind))?;
        let mut reader = Reader::new(payload);
        let r = &mut reader;
        let resp = match t {
            FrameType::Vehicle => Self::Vehicle(decode_vehicle(v, r)?),
            FrameType::Stop => Self::Stop(decode_stop(v, r)?),
            FrameType::Vehicles => {
                let truncated = flag(r.u8()?, "truncated flag")?;
                r.u8()?;
                r.u16()?;
                let n = r.count("vehicles", MAX_IN_BOX, WireFound::min_len(v))?;
                let found = (0..n)
                    .map(|_| WireFound::decode(v, r))
                    .collect::<Result<_, _>>()?;
                Self::Vehicles { truncated, found }
            }
            FrameType::History => {
                let truncated = flag(r.u8()?, "truncated flag")?;
                r.u8()?;
                r.u16()?;
                let n = r.count("path points", MAX_HISTORY_POINTS, PATH_POINT_LEN)?;
                let points = (0..n).map(|_| decode_point(r)).collect::<Result<_, _>>()?;
                Self::History { truncated, points }
            }
            FrameType::Ok => Self::Ok,
            FrameType::Zones if v >= Version::V2 => Self::Zones {
                geojson: r.text("zones", usize::MAX)?.to_string(),
            },
            FrameType::TrackingToken => Self::TrackingToken {
                expires_ms: r.i64()?,
                token: r.str("token", MAX_STR_LEN)?.to_string(),
            },
            FrameType::Subscribed => Self::Subscribed { next_id: r.u64()? },
            FrameType::Events => {
                let n = r.count("events", usize::MAX, WireEvent::min_len(v))?;
                Self::Events(
                    (0..n)
                        .map(|_| WireEvent::decode(v, r))
                        .collect::<Result<_, _>>()?,
                )
            }
            FrameType::Lost => Self::Lost { count: r.u64()? },
            FrameType::Stats => {
                let n = r.count("stats", MAX_LIST_LEN, 10)?;
                Self::Stats(
                    (0..n)
                        .map(|_| Ok((r.str("name", MAX_STR_LEN)?.to_string(), r.u64()?)))
                        .collect::<Result<_, DecodeError>>()?,
                )
            }
            FrameType::Error => Self::Error {
                code: r.u16()?,
                message: r.str("message", MAX_STR_LEN)?.to_string(),
            },
            _ => return Err(DecodeError::UnknownType(kind)),
        };
        reader.finish()?;
        Ok(resp)
    }
}

fn decode_vehicle(v: Version, r: &mut Reader<'_>) -> Result<WireVehicle, DecodeError> {
    let (vehicle, time_ms, matched_time_ms) = (get_id(r, v, "vehicle id")?, r.i64()?, r.i64()?);
    let (lat_e7, lon_e7, edge, way_id) = (r.i32()?, r.i32()?, r.u32()?, r.i64()?);
    let (offset_m, speed_mps, heading_deg, odometer_m) = (r.f32()?, r.f32()?, r.f32()?, r.f64()?);
    let match_status = r.u8()?;
    let known = match v {
        Version::V1 => MATCH_BREAK as usize,
        Version::V2 | Version::V3 | Version::V4 => MATCH_STATUS_NAMES.len(),
    };
    if match_status as usize >= known {
        return Err(DecodeError::BadValue("match status"));
    }
    let flags = r.u8()?;
    r.u16()?;
    let next = get_id(r, v, "next stop id")?;
    let n = r.count("stops", MAX_LIST_LEN, WireStopEta::min_len(v))?;
    let stops = (0..n)
        .map(|_| WireStopEta::decode(v, r))
        .collect::<Result<_, _>>()?;
    let v4 = v >= Version::V4;
    let (lifetime_odometer_m, moving_s) = if v4 { (r.f64()?, r.f64()?) } else { (0.0, 0.0) };
    let (service_since_ms, service_driven_m, service_moving_s, service_due) = if v4 {
        (r.i64()?, r.f64()?, r.f64()?, r.u8()?)
    } else {
        (NO_TIME, 0.0, 0.0, 0)
    };
    Ok(WireVehicle {
        vehicle,
        time_ms,
        matched_time_ms,
        lat_e7,
        lon_e7,
        has_position: flags & 1 != 0,
        edge,
        way_id,
        offset_m,
        speed_mps,
        heading_deg,
        odometer_m,
        lifetime_odometer_m,
        moving_s,
        service_since_ms,
        service_driven_m,
        service_moving_s,
        service_due,
        match_status,
        moving: flags & 2 != 0,
        online: flags & 4 != 0,
        off_route: flags & 8 != 0,
        next_stop: (flags & 16 != 0).then_some(next),
        stops,
    })
}

fn decode_stop(v: Version, r: &mut Reader<'_>) -> Result<WireStopView, DecodeError> {
    let (stop, vehicle) = (get_id(r, v, "stop id")?, get_id(r, v, "vehicle id")?);
    let status = StopStatusCode::from_u8(r.u8()?)?;
    let flags = r.u8()?;
    let state = match v {
        Version::V1 => {
            r.u16()?;
            None
        }
        Version::V2 | Version::V3 | Version::V4 => {
            let s = EtaStateCode::from_u8(r.u8()?)?;
            r.u8()?;
            Some(s)
        }
    };
    let stops_before = r.u32()?;
    let mut eta = WireEta::v1(r.i64()?);
    if let Some(state) = state {
        eta.state = state;
        (eta.p10_ms, eta.p90_ms) = (r.i64()?, r.i64()?);
    }
    let (remaining_m, lat_e7, lon_e7) = (r.f32()?, r.i32()?, r.i32()?);
    let (window_start_ms, window_end_ms, service_s) = (r.i64()?, r.i64()?, r.f32()?);
    let (snap_m, snap_component) = match v {
        Version::V1 => (f32::NAN, 0),
        Version::V2 | Version::V3 | Version::V4 => (r.f32()?, r.u32()?),
    };
    let (vlat, vlon, vt, closed_ms) = (r.i32()?, r.i32()?, r.i64()?, r.i64()?);
    Ok(WireStopView {
        stop,
        vehicle,
        status,
        late: flags & 1 != 0,
        at_risk: v >= Version::V3 && flags & 4 != 0,
        stops_before,
        eta,
        remaining_m,
        lat_e7,
        lon_e7,
        window_start_ms,
        window_end_ms,
        service_s,
        snap_m,
        snap_component,
        vehicle_pos: (flags & 2 != 0).then_some((vlat, vlon, vt)),
        closed_ms,
        customer_ref: r.str("customer_ref", MAX_STR_LEN)?.to_string(),
        outcome_text: r.str("outcome", MAX_STR_LEN)?.to_string(),
    })
}
