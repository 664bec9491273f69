//! One client connection: the handshake on the control stream (HELLO →
//! WELCOME, or an error code and the connection closed), then its ping
//! streams, datagrams and request streams, each served by its own task.
//! Acknowledgements and ping-side errors go back on the control stream
//! through one bounded queue: a client that stops reading them stops being
//! read itself.

use std::sync::Arc;
use std::time::Duration;

use quinn::{Connection, SendStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::{debug, info, warn};

use super::guard::{Gate, token_key};
use super::session::Session;
use super::{ServerStats, Shared, pings, requests};
use crate::io::{ReadFrame, read_frame};
use crate::protocol::{
    ErrorCode, FrameType, Hello, MAX_STR_LEN, PingBatch, Response, VERSION, Version, Welcome,
};

/// Frames queued for the control stream (acks, ping-side errors).
pub type ControlTx = mpsc::Sender<Vec<u8>>;

/// Closes the connection with a code and a reason.
pub fn close(conn: &Connection, code: ErrorCode, reason: &str) {
    conn.close((code as u32).into(), reason.as_bytes());
}

async fn refuse(conn: &Connection, send: &mut SendStream, code: ErrorCode, reason: &str) {
    let mut buf = Vec::new();
    // An ERROR frame reads the same in every version.
    Response::error(code, reason).encode(Version::V1, &mut buf);
    let _ = send.write_all(&buf).await;
    let _ = send.finish();
    // Give the error frame a moment to leave before the close overtakes it.
    let _ = timeout(Duration::from_millis(200), send.stopped()).await;
    close(conn, code, reason);
}

pub async fn serve(shared: Arc<Shared>, incoming: quinn::Incoming) {
    let limits = &shared.config.limits;
    let hello_time = Duration::from_secs(limits.hello_timeout_s);
    let conn = match timeout(hello_time, async { incoming.await }).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            ServerStats::add(&shared.stats.handshakes_failed, 1);
            debug!(error = %e, "handshake failed");
            return;
        }
        Err(_) => {
            ServerStats::add(&shared.stats.handshakes_failed, 1);
            return;
        }
    };
    let remote = conn.remote_address();
    let Ok(Ok((mut ctl_send, mut ctl_recv))) = timeout(hello_time, conn.accept_bi()).await else {
        ServerStats::add(&shared.stats.handshakes_failed, 1);
        close(&conn, ErrorCode::HelloTimeout, "no control stream in time");
        return;
    };
    let mut buf = Vec::new();
    let hello = match timeout(
        hello_time,
        read_frame(&mut ctl_recv, MAX_STR_LEN + 64, &mut buf),
    )
    .await
    {
        Ok(ReadFrame::Frame(h)) if h.kind == FrameType::Hello as u16 => match Hello::decode(&buf) {
            Ok(hello) => hello,
            Err(e) => {
                ServerStats::add(&shared.stats.malformed_frames, 1);
                refuse(
                    &conn,
                    &mut ctl_send,
                    ErrorCode::Malformed,
                    &format!("HELLO: {e}"),
                )
                .await;
                return;
            }
        },
        Ok(ReadFrame::Frame(_)) => {
            ServerStats::add(&shared.stats.protocol_violations, 1);
            refuse(
                &conn,
                &mut ctl_send,
                ErrorCode::ProtocolViolation,
                "HELLO expected first",
            )
            .await;
            return;
        }
        Ok(ReadFrame::Bad(e)) => {
            ServerStats::add(&shared.stats.malformed_frames, 1);
            refuse(
                &conn,
                &mut ctl_send,
                ErrorCode::of_decode(&e),
                &e.to_string(),
            )
            .await;
            return;
        }
        _ => {
            ServerStats::add(&shared.stats.handshakes_failed, 1);
            refuse(
                &conn,
                &mut ctl_send,
                ErrorCode::HelloTimeout,
                "no HELLO in time",
            )
            .await;
            return;
        }
    };
    // The client offers the newest version it speaks; the connection
    // uses the lower of that and ours.
    let Some(version) = Version::agree(hello.version) else {
        refuse(
            &conn,
            &mut ctl_send,
            ErrorCode::UnsupportedVersion,
            &format!("this server speaks versions 1 to {VERSION}"),
        )
        .await;
        return;
    };
    // After wrong tokens from this address, checks are spaced out (see
    // `guard`); a token that got in from here before never waits.
    let key = token_key(&hello.token);
    match shared.guard.gate(remote.ip(), key) {
        Gate::Now => {}
        Gate::After(wait) => {
            ServerStats::add(&shared.stats.auth_checks_delayed, 1);
            tokio::time::sleep(wait).await;
        }
        Gate::Refused => {
            ServerStats::add(&shared.stats.connections_refused_auth, 1);
            refuse(
                &conn,
                &mut ctl_send,
                ErrorCode::LimitExceeded,
                "too many wrong tokens from this address: try again in a minute",
            )
            .await;
            return;
        }
    }
    let Some(principal) = shared.auth.authenticate(&hello.token) else {
        ServerStats::add(&shared.stats.auth_failures, 1);
        shared.guard.auth_failed(remote.ip());
        warn!(%remote, "refused: unknown token");
        refuse(
            &conn,
            &mut ctl_send,
            ErrorCode::Unauthenticated,
            "unknown or expired token",
        )
        .await;
        return;
    };
    shared.guard.auth_succeeded(remote.ip(), key);
    ServerStats::add(&shared.stats.connections_accepted, 1);
    info!(%remote, role = principal.role.as_str(), token = %principal.label, version = version as u16, "connected");
    let max_frame = limits.max_frame_bytes;
    let datagram_batch = conn.max_datagram_size().map_or(0, |d| {
        PingBatch::capacity(d.saturating_sub(crate::protocol::FRAME_HEADER_LEN))
    });
    let welcome = Welcome {
        version: version as u16,
        role: principal.role,
        max_frame: max_frame as u32,
        max_batch: PingBatch::capacity(max_frame) as u32,
        datagram_batch: datagram_batch as u32,
        clock_ms: crate::convert::ms(shared.clock.now()),
        fleet: shared.auth.fleet_name(principal.fleet).to_string(),
    };
    buf.clear();
    welcome.encode(&mut buf);
    if ctl_send.write_all(&buf).await.is_err() {
        return;
    }

    let session = Arc::new(Session::new(principal, version));
    let (control_tx, mut control_rx) = mpsc::channel::<Vec<u8>>(64);
    let writer = tokio::spawn(async move {
        while let Some(frame) = control_rx.recv().await {
            if ctl_send.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let tasks = [
        tokio::spawn(accept_uni(
            shared.clone(),
            session.clone(),
            conn.clone(),
            control_tx.clone(),
        )),
        tokio::spawn(accept_bi(shared.clone(), session.clone(), conn.clone())),
        tokio::spawn(pings::datagrams(
            shared.clone(),
            session.clone(),
            conn.clone(),
        )),
        tokio::spawn(nothing_after_hello(shared.clone(), conn.clone(), ctl_recv)),
    ];
    drop(control_tx);
    let reason = conn.closed().await;
    for t in tasks {
        t.abort();
    }
    writer.abort();
    info!(%remote, %reason, "disconnected");
}

/// The control stream carries nothing from the client after HELLO (it may
/// finish its side): a byte more is a frame out of place, and closes the
/// connection as a protocol violation.
async fn nothing_after_hello(shared: Arc<Shared>, conn: Connection, mut recv: quinn::RecvStream) {
    let mut byte = [0u8; 1];
    if let Ok(Some(_)) = recv.read(&mut byte).await {
        ServerStats::add(&shared.stats.protocol_violations, 1);
        close(
            &conn,
            ErrorCode::ProtocolViolation,
            "nothing may follow HELLO on the control stream",
        );
    }
}

async fn accept_uni(
    shared: Arc<Shared>,
    session: Arc<Session>,
    conn: Connection,
    control: ControlTx,
) {
    while let Ok(recv) = conn.accept_uni().await {
        tokio::spawn(pings::stream(
            shared.clone(),
            session.clone(),
            conn.clone(),
            recv,
            control.clone(),
        ));
    }
}

async fn accept_bi(shared: Arc<Shared>, session: Arc<Session>, conn: Connection) {
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(requests::stream(
            shared.clone(),
            session.clone(),
            conn.clone(),
            send,
            recv,
        ));
    }
}
