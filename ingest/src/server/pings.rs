//! Pings in. On a stream, each PINGS frame is checked record by record
//! (range, reserved bits, far future, the token's fleet), offered to the
//! engine, and acknowledged on the control stream once every good record
//! is in a shard queue. While a shard queue is full the stream is simply
//! not read: QUIC flow control then stops the sender, so nothing is shed on
//! the reliable path. Datagrams take the lossy path: what does not fit is
//! dropped and counted.

use std::sync::Arc;
use std::time::Duration;

use lastmile_engine::Ping;
use lastmile_engine::fleet::VehicleId;
use quinn::{Connection, RecvStream};
use tracing::debug;

use super::connection::{ControlTx, close};
use super::{ServerStats, Shared};
use crate::auth::Principal;
use crate::io::{ReadFrame, read_frame};
use crate::protocol::{Ack, ErrorCode, FrameType, PingBatch, Response, split_frame};

/// What checking a batch found.
#[derive(Default)]
struct Checked {
    invalid: u32,
    out_of_scope: u32,
    /// First vehicle refused for scope (for the error message).
    stranger: Option<VehicleId>,
    latest: f64,
}

/// Appends the acceptable records of `batch` to `out`.
fn check(
    shared: &Shared,
    who: &Principal,
    batch: &PingBatch<'_>,
    out: &mut Vec<(VehicleId, Ping)>,
) -> Checked {
    let mut c = Checked::default();
    let horizon = super::clock::wall_s() + shared.config.limits.max_future_s;
    let everyone = who.fleet.is_none();
    for rec in batch.iter() {
        match rec.to_ping() {
            Ok((v, p)) if p.time <= horizon => {
                if everyone || shared.auth.covers(who, v) {
                    c.latest = c.latest.max(p.time);
                    out.push((v, p));
                } else {
                    c.out_of_scope += 1;
                    c.stranger.get_or_insert(v);
                }
            }
            _ => c.invalid += 1,
        }
    }
    let stats = &shared.stats;
    ServerStats::add(&stats.pings_received, batch.len() as u64);
    ServerStats::add(&stats.pings_invalid, u64::from(c.invalid));
    if c.out_of_scope > 0 {
        ServerStats::add(&stats.pings_out_of_scope, u64::from(c.out_of_scope));
        ServerStats::add(&stats.forbidden, 1);
    }
    c
}

fn error_frame(code: ErrorCode, message: String) -> Vec<u8> {
    let mut buf = Vec::new();
    Response::error(code, message).encode(&mut buf);
    buf
}

/// Serves one unidirectional ping stream until it ends.
pub async fn stream(
    shared: Arc<Shared>,
    who: Arc<Principal>,
    conn: Connection,
    mut recv: RecvStream,
    control: ControlTx,
) {
    let stats = &shared.stats;
    if !who.role.may_send_pings() {
        ServerStats::add(&stats.forbidden, 1);
        let _ = recv.stop((ErrorCode::Forbidden as u32).into());
        let msg = format!("role {} may not send pings", who.role.as_str());
        let _ = control.send(error_frame(ErrorCode::Forbidden, msg)).await;
        return;
    }
    let max_frame = shared.config.limits.max_frame_bytes;
    let (mut buf, mut pings, mut refused, mut retry) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    loop {
        let h = match read_frame(&mut recv, max_frame, &mut buf).await {
            ReadFrame::Frame(h) => h,
            ReadFrame::End => return,
            ReadFrame::Truncated => {
                ServerStats::add(&stats.partial_frames, 1);
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
                let _ = control
                    .send(error_frame(ErrorCode::Malformed, format!("PINGS: {e}")))
                    .await;
                return;
            }
        };
        ServerStats::add(&stats.ping_frames, 1);
        pings.clear();
        let checked = check(&shared, &who, &batch, &mut pings);
        let mut accepted = shared.sink.offer(&pings, &mut refused);
        let mut wait = Duration::from_micros(500);
        while !refused.is_empty() {
            // A shard queue is full: stop reading this stream until the
            // engine has room (the sender's flow-control window closes).
            ServerStats::add(&stats.backpressure_waits, 1);
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(20));
            std::mem::swap(&mut retry, &mut refused);
            refused.clear();
            accepted += shared.sink.offer(&retry, &mut refused);
        }
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
            let msg = format!(
                "batch {}: {} pings for vehicles outside fleet {:?} (first: {v})",
                batch.batch_id,
                checked.out_of_scope,
                shared.auth.fleet_name(who.fleet)
            );
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
pub async fn datagrams(shared: Arc<Shared>, who: Arc<Principal>, conn: Connection) {
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
        let (accepted, shed) = shared.sink.submit_lossy(&pings);
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
    who: &Principal,
    d: &[u8],
    out: &mut Vec<(VehicleId, Ping)>,
) -> f64 {
    let stats = &shared.stats;
    ServerStats::add(&stats.datagrams_received, 1);
    if !who.role.may_send_pings() {
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
    check(shared, who, &batch, out).latest
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
