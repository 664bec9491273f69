//! Pings in. On a stream, each PINGS frame is checked record by record
//! (range, reserved bits, time far ahead of the wall clock or behind the
//! event-time watermark, absurd speed, the token's fleet), offered to the
//! engine, and acknowledged on the control stream once every good record
//! is in a shard queue. While a shard queue is full the stream is simply
//! not read: QUIC flow control then stops the sender, so nothing is shed on
//! the reliable path. Datagrams take the lossy path: what does not fit is
//! dropped and counted.

use std::sync::Arc;

use lastmile_engine::Ping;
use lastmile_engine::fleet::VehicleId;
use lastmile_node::admit::{self, Bounds};
use quinn::{Connection, RecvStream};
use tracing::debug;

use super::connection::{ControlTx, close};
use super::session::Session;
use super::{ServerStats, Shared};
use crate::io::{ReadFrame, read_frame};
use crate::protocol::{
    Ack, ErrorCode, FrameType, PingBatch, PingError, PingRecord, Response, Version, split_frame,
};

/// Why a record was refused, one counter each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reject {
    Position,
    Time,
    Future,
    Past,
    Speed,
    Field,
}

/// A record decoded and within the node's bounds (`lastmile_node::admit`).
fn admit(bounds: &Bounds, rec: &PingRecord) -> Result<(VehicleId, Ping), Reject> {
    let (v, p) = rec.to_ping().map_err(|e| match e {
        PingError::BadPosition => Reject::Position,
        PingError::BadTime => Reject::Time,
        PingError::BadHeading | PingError::ReservedFlags => Reject::Field,
    })?;
    bounds.check(&p).map_err(|r| match r {
        admit::Reject::Time => Reject::Time,
        admit::Reject::Future => Reject::Future,
        admit::Reject::Past => Reject::Past,
        admit::Reject::Speed => Reject::Speed,
    })?;
    Ok((v, p))
}

/// What checking a batch found.
#[derive(Default)]
struct Checked {
    invalid: u32,
    out_of_scope: u32,
    /// Refusals by reason, in [`Reject`] order.
    reasons: [u32; 6],
    /// First vehicle id refused for scope, as sent (for the error message).
    stranger: Option<u64>,
    latest: f64,
}

/// Appends the acceptable records of `batch` to `out`.
fn check(
    shared: &Shared,
    session: &Session,
    batch: &PingBatch<'_>,
    out: &mut Vec<(VehicleId, Ping)>,
) -> Checked {
    let mut c = Checked::default();
    let bounds = Bounds::now(shared);
    let vehicles = session.ping_vehicles(shared);
    for rec in batch.iter() {
        match admit(&bounds, &rec) {
            Ok((wire, p)) => {
                let vehicle = vehicles.get(wire);
                if let Some(v) = vehicle {
                    c.latest = c.latest.max(p.time);
                    out.push((v, p));
                } else {
                    c.out_of_scope += 1;
                    c.stranger.get_or_insert(wire);
                }
            }
            Err(why) => {
                c.invalid += 1;
                c.reasons[why as usize] += 1;
            }
        }
    }
    let stats = &shared.stats;
    ServerStats::add(&stats.pings_received, batch.len() as u64);
    if c.invalid > 0 {
        ServerStats::add(&stats.pings_invalid, u64::from(c.invalid));
        let by_reason = [
            &stats.pings_rejected_position,
            &stats.pings_rejected_time,
            &stats.pings_rejected_future,
            &stats.pings_rejected_past,
            &stats.pings_rejected_speed,
            &stats.pings_rejected_field,
        ];
        for (counter, n) in by_reason.into_iter().zip(c.reasons) {
            ServerStats::add(counter, u64::from(n));
        }
    }
    if c.out_of_scope > 0 {
        ServerStats::add(&stats.pings_out_of_scope, u64::from(c.out_of_scope));
        ServerStats::add(&stats.forbidden, 1);
    }
    c
}

fn error_frame(code: ErrorCode, message: String) -> Vec<u8> {
    let mut buf = Vec::new();
    // An ERROR frame reads the same in every version.
    Response::error(code, message).encode(Version::V1, &mut buf);
    buf
}

/// Serves one unidirectional ping stream until it ends.
pub async fn stream(
    shared: Arc<Shared>,
    session: Arc<Session>,
    conn: Connection,
    mut recv: RecvStream,
    control: ControlTx,
) {
    let stats = &shared.stats;
    // A role that may not send pings still gets an ACK for every PINGS
    // frame (all rejected) and one ERROR, so a client that resends
    // unacknowledged batches does not resend them forever.
    let who = &session.who;
    let allowed = who.role.may_send_pings();
    let mut told = false;
    let max_frame = shared.config.limits.max_frame_bytes;
    let (mut buf, mut pings) = (Vec::new(), Vec::new());
    loop {
        let h = match read_frame(&mut recv, max_frame, &mut buf).await {
            ReadFrame::Frame(h) => h,
            ReadFrame::End => return,
            ReadFrame::Truncated => {
                ServerStats::add(&stats.partial_frames, 1);
                return;
            }
            ReadFrame::Cut(e) => {
                // Reset mid-frame: nothing of the frame applied, as at a FIN.
                ServerStats::add(&stats.partial_frames, 1);
                debug!(error = %e, "ping stream reset mid-frame");
                return;
            }
            ReadFrame::Failed(e) => {
                debug!(error = %e, "ping stream lost");
                return;
            }
            ReadFrame::Bad(e) => {
                let code = stats.bad_frame(&e);
                let _ = recv.stop((code as u32).into());
                let _ = control
                    .send(error_frame(code, format!("ping stream: {e}")))
                    .await;
                return;
            }
        };
        if h.kind != FrameType::Pings as u16 {
            ServerStats::add(&stats.protocol_violations, 1);
            close(
                &conn,
                ErrorCode::ProtocolViolation,
                "only PINGS frames on unidirectional streams",
            );
            return;
        }
        let batch = match PingBatch::decode(&buf) {
            Ok(b) => b,
            Err(e) => {
                ServerStats::add(&stats.malformed_frames, 1);
                let _ = recv.stop((ErrorCode::Malformed as u32).into());
                // The batch id leads the payload: name it when it is there.
                let msg = match buf.get(..8) {
                    Some(id) => format!(
                        "batch {}: PINGS: {e}",
                        u64::from_le_bytes(id.try_into().expect("8 bytes"))
                    ),
                    None => format!("PINGS: {e}"),
                };
                let _ = control.send(error_frame(ErrorCode::Malformed, msg)).await;
                return;
            }
        };
        ServerStats::add(&stats.ping_frames, 1);
        if !allowed {
            ServerStats::add(&stats.forbidden, 1);
            ServerStats::add(&stats.pings_received, batch.len() as u64);
            ServerStats::add(&stats.pings_forbidden, batch.len() as u64);
            let mut frame = Vec::with_capacity(32);
            Ack {
                batch_id: batch.batch_id,
                accepted: 0,
                rejected: batch.len() as u32,
            }
            .encode(&mut frame);
            if control.send(frame).await.is_err() {
                return;
            }
            ServerStats::add(&stats.acks_sent, 1);
            if !std::mem::replace(&mut told, true) {
                let msg = format!(
                    "batch {}: role {} may not send pings",
                    batch.batch_id,
                    who.role.as_str()
                );
                let _ = control.send(error_frame(ErrorCode::Forbidden, msg)).await;
            }
            continue;
        }
        pings.clear();
        let checked = check(&shared, &session, &batch, &mut pings);
        // Over the memory bound or a full shard queue: stop reading this
        // stream until the engine has room (the sender's flow-control
        // window closes).
        let accepted = admit::offer(&shared.node, &pings, None, &stats.backpressure_waits)
            .await
            .unwrap_or_else(|b| b.accepted);
        ServerStats::add(&stats.pings_accepted, accepted as u64);
        shared.clock.observe(checked.latest);
        let mut frame = Vec::with_capacity(32);
        Ack {
            batch_id: batch.batch_id,
            accepted: accepted as u32,
            rejected: checked.invalid + checked.out_of_scope,
        }
        .encode(&mut frame);
        if control.send(frame).await.is_err() {
            return;
        }
        ServerStats::add(&stats.acks_sent, 1);
        if let Some(v) = checked.stranger {
            let msg = match session.version {
                Version::V1 => format!(
                    "batch {}: {} pings for vehicles outside fleet {:?} (first: {v})",
                    batch.batch_id,
                    checked.out_of_scope,
                    shared.auth.fleet_name(who.fleet)
                ),
                Version::V2 | Version::V3 | Version::V4 => format!(
                    "batch {}: {} pings for aliases no BIND on this connection set (first: {v})",
                    batch.batch_id, checked.out_of_scope,
                ),
            };
            let _ = control.send(error_frame(ErrorCode::Forbidden, msg)).await;
        }
    }
}

/// Pings of datagrams already received are handed to the engine together,
/// up to this many: the engine's queues count batches, and a datagram holds
/// at most a few dozen pings.
const DATAGRAM_COALESCE: usize = 2048;

/// Serves the connection's datagrams until it closes. Whatever has arrived
/// by the time one is read is taken with it, as one batch (no waiting: a
/// lone datagram goes straight through).
pub async fn datagrams(shared: Arc<Shared>, who: Arc<Session>, conn: Connection) {
    let mut pings = Vec::new();
    let mut next = conn.read_datagram().await;
    while let Ok(first) = next {
        pings.clear();
        let mut latest = take_datagram(&shared, &who, &first, &mut pings);
        let mut closed = false;
        while pings.len() < DATAGRAM_COALESCE {
            match poll_now(conn.read_datagram()) {
                Some(Ok(d)) => latest = latest.max(take_datagram(&shared, &who, &d, &mut pings)),
                Some(Err(_)) => {
                    closed = true;
                    break;
                }
                None => break,
            }
        }
        let (accepted, shed) = if shared.memory.over() {
            ServerStats::add(&shared.stats.pings_shed_memory, pings.len() as u64);
            (0, pings.len())
        } else {
            admit::offer_lossy(&shared.node, &pings)
        };
        ServerStats::add(&shared.stats.pings_accepted, accepted as u64);
        ServerStats::add(&shared.stats.pings_shed, shed as u64);
        shared.clock.observe(latest);
        if closed {
            return;
        }
        next = conn.read_datagram().await;
    }
}

/// Checks one datagram's pings into `out`; returns the latest ping time.
fn take_datagram(
    shared: &Shared,
    session: &Session,
    d: &[u8],
    out: &mut Vec<(VehicleId, Ping)>,
) -> f64 {
    let stats = &shared.stats;
    ServerStats::add(&stats.datagrams_received, 1);
    if !session.who.role.may_send_pings() {
        ServerStats::add(&stats.forbidden, 1);
        ServerStats::add(&stats.datagrams_dropped, 1);
        return 0.0;
    }
    let batch = match split_frame(d, shared.config.limits.max_frame_bytes) {
        Ok(Some((h, payload, used))) if h.kind == FrameType::Pings as u16 && used == d.len() => {
            PingBatch::decode(payload).ok()
        }
        _ => None,
    };
    let Some(batch) = batch else {
        ServerStats::add(&stats.malformed_frames, 1);
        ServerStats::add(&stats.datagrams_dropped, 1);
        return 0.0;
    };
    check(shared, session, &batch, out).latest
}

/// Polls a future once: its output if it is ready now.
fn poll_now<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}
