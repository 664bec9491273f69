//! Request streams: each bidirectional stream after the control stream
//! carries requests, answered in order (a client may open one stream per
//! request or pipeline several). SUBSCRIBE turns the stream into an event
//! stream. Every request is checked against the caller's role and fleet
//! first, and its names are turned into engine ids in the caller's fleet
//! (a name another fleet uses is, to the caller, a name nobody uses); what
//! is refused gets an ERROR frame and a counter, and the stream stays
//! usable. A frame that does not decode closes the stream; a frame type
//! that has no business here closes the connection. Route and stop
//! commands are checked and run by [`super::commands`].

use std::sync::Arc;
use std::time::Duration;

use lastmile_engine::fleet::{Admission, Engine, VehicleId};
use quinn::{Connection, RecvStream, SendStream};

use super::commands::{blocking, command, time_of};
use super::connection::close;
use lastmile_node::dispatch::Save;

use super::session::{Refusal, Session, no_vehicle, wire};
use super::{ServerStats, Shared, subscribe};
use crate::auth::Principal;
use crate::convert;
use crate::ids::Kind;
use crate::io::{ReadFrame, read_frame};
use crate::protocol::{
    AT_END, DecodeError, ErrorCode, MAX_HISTORY_POINTS, NO_TIME, Request, Response, Version,
    WireFound,
};

pub async fn stream(
    shared: Arc<Shared>,
    session: Arc<Session>,
    conn: Connection,
    mut send: SendStream,
    mut recv: RecvStream,
) {
    let (stats, v) = (&shared.stats, session.version);
    let max_frame = shared.config.limits.max_frame_bytes;
    let (mut buf, mut out) = (Vec::new(), Vec::new());
    loop {
        let h = match read_frame(&mut recv, max_frame, &mut buf).await {
            ReadFrame::Frame(h) => h,
            ReadFrame::End | ReadFrame::Failed(_) => break,
            ReadFrame::Truncated | ReadFrame::Cut(_) => {
                // A request cut off by the end (or a reset) of its stream
                // is not applied, and the client is told so.
                ServerStats::add(&stats.partial_frames, 1);
                ServerStats::add(&stats.malformed_frames, 1);
                let msg = "request frame cut off by the end of its stream: not applied";
                end_with_error(&mut send, &mut recv, v, ErrorCode::Malformed, msg).await;
                return;
            }
            ReadFrame::Bad(e) => {
                let code = stats.bad_frame(&e);
                end_with_error(&mut send, &mut recv, v, code, &e.to_string()).await;
                return;
            }
        };
        let req = match Request::decode(v, h.kind, &buf) {
            Ok(r) => r,
            Err(DecodeError::UnknownType(t)) => {
                ServerStats::add(&stats.protocol_violations, 1);
                close(
                    &conn,
                    ErrorCode::ProtocolViolation,
                    &format!("frame type 0x{t:04x} is not a request"),
                );
                return;
            }
            Err(e) => {
                ServerStats::add(&stats.malformed_frames, 1);
                let msg = e.to_string();
                end_with_error(&mut send, &mut recv, v, ErrorCode::Malformed, &msg).await;
                return;
            }
        };
        ServerStats::add(&stats.requests, 1);
        if let Request::Subscribe {
            from,
            kinds,
            vehicles,
            stops,
        } = req
        {
            subscribe::run(
                &shared,
                &session,
                send,
                recv,
                (from, kinds),
                vehicles,
                stops,
            )
            .await;
            return;
        }
        let asked = std::time::Instant::now();
        let resp = match answer(&shared, &session, req).await {
            Ok(r) => r,
            Err((code, message)) => {
                ServerStats::add(&stats.request_errors, 1);
                if code == ErrorCode::Forbidden {
                    ServerStats::add(&stats.forbidden, 1);
                }
                Response::error(code, message)
            }
        };
        shared.record_request(asked.elapsed());
        out.clear();
        resp.encode(v, &mut out);
        if send.write_all(&out).await.is_err() {
            return;
        }
    }
    let _ = send.finish();
}

async fn end_with_error(
    send: &mut SendStream,
    recv: &mut RecvStream,
    v: Version,
    code: ErrorCode,
    message: &str,
) {
    let mut out = Vec::new();
    Response::error(code, message).encode(v, &mut out);
    let _ = send.write_all(&out).await;
    let _ = send.finish();
    let _ = recv.stop((code as u32).into());
}

fn forbidden(what: impl std::fmt::Display) -> Refusal {
    (ErrorCode::Forbidden, what.to_string())
}

fn engine(shared: &Shared) -> Result<&Arc<Engine>, Refusal> {
    shared.sink.engine().ok_or((
        ErrorCode::NotFound,
        "this server counts pings only (no engine)".into(),
    ))
}

fn require(ok: bool, who: &Principal, what: &str) -> Result<(), Refusal> {
    if ok {
        Ok(())
    } else {
        Err(forbidden(format!(
            "role {} may not {what}",
            who.role.as_str()
        )))
    }
}

async fn answer(shared: &Arc<Shared>, s: &Session, req: Request) -> Result<Response, Refusal> {
    let who = &s.who;
    match req {
        Request::GetStats => {
            // The counters span every fleet: another fleet's volume is not
            // a fleet token's to read.
            require(
                who.role == crate::protocol::Role::Admin,
                who,
                "read the server's statistics (they span every fleet)",
            )?;
            Ok(Response::Stats(shared.stats_snapshot()))
        }
        Request::GetVehicle { vehicle } => {
            require(who.role.may_read(), who, "query vehicles")?;
            let id = s.vehicle_of(shared, &vehicle)?;
            let e = engine(shared)?;
            let v = e.vehicle(id).ok_or_else(|| no_vehicle(&vehicle))?;
            let name = |kind, id| s.name(shared, kind, id);
            Ok(Response::Vehicle(convert::vehicle(&v, e.graph(), &name)))
        }
        Request::GetStop { stop } => {
            let (node, who_owned) = (shared.node.clone(), who.clone());
            let (id, view, reveal) =
                tokio::task::spawn_blocking(move || node.stop_for(&who_owned, &stop))
                    .await
                    .map_err(|e| (ErrorCode::Internal, e.to_string()))?
                    .map_err(wire)?;
            let name = |kind, id| s.name(shared, kind, id);
            Ok(Response::Stop(convert::stop_view(id, &view, reveal, &name)))
        }
        Request::Nearest { lat_e7, lon_e7, k } => {
            require(who.role.may_read(), who, "query positions")?;
            let p = convert::latlon(lat_e7, lon_e7)
                .ok_or((ErrorCode::BadValue, "position out of range".into()))?;
            let (found, truncated) = shared.nearest_for(who, p, k as usize).map_err(wire)?;
            Ok(Response::Vehicles {
                truncated,
                found: found.iter().map(|f| wire_found(shared, s, f)).collect(),
            })
        }
        Request::InBox {
            min_lat_e7,
            min_lon_e7,
            max_lat_e7,
            max_lon_e7,
        } => {
            require(who.role.may_read(), who, "query positions")?;
            let (Some(lo), Some(hi)) = (
                convert::latlon(min_lat_e7, min_lon_e7),
                convert::latlon(max_lat_e7, max_lon_e7),
            ) else {
                return Err((ErrorCode::BadValue, "box corner out of range".into()));
            };
            let (found, truncated) = shared
                .in_box_for(who, [lo.lon, lo.lat, hi.lon, hi.lat])
                .map_err(wire)?;
            Ok(Response::Vehicles {
                truncated,
                found: found.iter().map(|f| wire_found(shared, s, f)).collect(),
            })
        }
        Request::CreateTrackingToken { stop, ttl_s } => {
            require(who.role.may_dispatch(), who, "create tracking tokens")?;
            let (stop, _) = shared.stop_owner(who, &stop).map_err(wire)?;
            let (node, who) = (shared.node.clone(), who.clone());
            let (token, expires_ms) = tokio::task::spawn_blocking(move || {
                node.mint_tracking(&who, stop, u64::from(ttl_s))
            })
            .await
            .map_err(|e| (ErrorCode::Internal, e.to_string()))?
            .map_err(wire)?;
            ServerStats::add(&shared.stats.tracking_tokens_minted, 1);
            Ok(Response::TrackingToken { token, expires_ms })
        }
        Request::Subscribe { .. } => Err((ErrorCode::Internal, "handled by the stream".into())),
        Request::GetHistory {
            vehicle,
            from_ms,
            to_ms,
        } => {
            require(who.role.may_read(), who, "read history")?;
            let vehicle = s.vehicle_of(shared, &vehicle)?;
            history(shared, vehicle, (from_ms, to_ms)).await
        }
        Request::Bind { vehicles } => {
            require(who.role.may_send_pings(), who, "send pings")?;
            let ids = s
                .create_all(
                    shared,
                    vehicles.iter().map(|(_, n)| (Kind::Vehicle, n.as_str())),
                    Save::Now,
                )
                .await?;
            let pairs: Vec<_> = vehicles.iter().map(|(a, _)| *a).zip(ids).collect();
            s.bind(&pairs)?;
            Ok(Response::Ok)
        }
        Request::Reassign {
            stop,
            to_vehicle,
            time_ms,
            index,
        } => {
            require(who.role.may_dispatch(), who, "change routes")?;
            let (stop, _) = shared.stop_owner(who, &stop).map_err(wire)?;
            let time = time_of(shared, time_ms)?;
            let to = s
                .create(shared, Kind::Vehicle, &to_vehicle, Save::WithCommand)
                .await?;
            let e = engine(shared)?.clone();
            let index = (index != AT_END).then_some(index as usize);
            blocking(shared, s, move || e.reassign(stop, to, index, time)).await?;
            ServerStats::add(&shared.stats.commands_applied, 1);
            Ok(Response::Ok)
        }
        Request::PutZones { time_ms, geojson } => {
            let time = time_of(shared, time_ms)?;
            let (node, who) = (shared.node.clone(), who.clone());
            off_thread(move || node.put_zones(&who, &geojson, time)).await?;
            ServerStats::add(&shared.stats.commands_applied, 1);
            Ok(Response::Ok)
        }
        Request::RemoveZones { time_ms, zones } => {
            let time = time_of(shared, time_ms)?;
            let (node, who) = (shared.node.clone(), who.clone());
            off_thread(move || node.remove_zones(&who, &zones, time)).await?;
            ServerStats::add(&shared.stats.commands_applied, 1);
            Ok(Response::Ok)
        }
        Request::GetZones => {
            let geojson = shared.zones_geojson(who).map_err(wire)?.to_string();
            Ok(Response::Zones { geojson })
        }
        cmd => {
            require(who.role.may_dispatch(), who, "change routes and stops")?;
            let (command, time) = command(shared, s, cmd).await?;
            let e = engine(shared)?.clone();
            blocking(shared, s, move || {
                e.command(command, time, Admission::Wait(Duration::from_secs(5)))
            })
            .await?;
            ServerStats::add(&shared.stats.commands_applied, 1);
            Ok(Response::Ok)
        }
    }
}

/// Runs a node call that waits (for the journal) off the async threads.
async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, lastmile_node::dispatch::Refusal> + Send + 'static,
) -> Result<T, Refusal> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?
        .map_err(wire)
}

/// A vehicle's matched path between two times (ms, [`NO_TIME`] open), from the store.
async fn history(
    shared: &Arc<Shared>,
    vehicle: VehicleId,
    (from_ms, to_ms): (i64, i64),
) -> Result<Response, Refusal> {
    engine(shared)?;
    let bound = |ms: i64, open: f64| {
        if ms == NO_TIME {
            open
        } else {
            convert::secs(ms)
        }
    };
    let window = (
        bound(from_ms, f64::NEG_INFINITY),
        bound(to_ms, f64::INFINITY),
    );
    let node = shared.node.clone();
    let answer =
        tokio::task::spawn_blocking(move || node.history(vehicle, window, MAX_HISTORY_POINTS))
            .await
            .map_err(|e| (ErrorCode::Internal, e.to_string()))?
            .ok_or((
                ErrorCode::NotFound,
                "this server keeps no history (its store is disabled)".to_string(),
            ))?;
    let (points, truncated) =
        answer.map_err(|e| (ErrorCode::Internal, format!("reading history: {e}")))?;
    Ok(Response::History { truncated, points })
}

fn wire_found(shared: &Shared, s: &Session, f: &lastmile_engine::live_index::Found) -> WireFound {
    WireFound {
        vehicle: s.name(shared, Kind::Vehicle, f.vehicle),
        lat_e7: convert::e7(f.at.pos.lat),
        lon_e7: convert::e7(f.at.pos.lon),
        time_ms: convert::ms(f.at.time),
        distance_m: f.distance_m as f32,
        speed_mps: f.at.speed_mps,
    }
}
