//! The front end's own counters: every refusal, drop and shed has one, so an
//! operator can tell a misbehaving client from an overloaded engine. Read
//! by the STATS request (and, with issue 7, exported to Prometheus).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($( $(#[$doc:meta])* $name:ident ),* $(,)?) => {
        /// Monotonic counters since start.
        #[derive(Default, Debug)]
        pub struct ServerStats {
            $( $(#[$doc])* pub $name: AtomicU64, )*
        }

        impl ServerStats {
            /// Every counter by name, in declaration order.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![ $( (stringify!($name), self.$name.load(Relaxed)), )* ]
            }
        }
    };
}

counters! {
    /// Connections that completed HELLO.
    connections_accepted,
    /// Refused before the handshake: too many connections.
    connections_refused,
    /// Refused before the handshake: the address holds too many connections.
    connections_refused_address,
    /// Refused at HELLO: the address's queue of token checks (spaced out
    /// after wrong tokens) was longer than the guard's longest wait.
    connections_refused_auth,
    /// Token checks that waited for their slot after wrong tokens from the address.
    auth_checks_delayed,
    /// QUIC Retry sent to an address that presented wrong tokens, before its handshake.
    retries_sent,
    /// Handshakes that failed (TLS, ALPN, timeout).
    handshakes_failed,
    /// HELLO with an unknown or expired token.
    auth_failures,
    /// Requests, pings or subscriptions outside the token's role or fleet.
    forbidden,
    /// Frames that did not decode (stream closed).
    malformed_frames,
    /// Frame types not allowed where they came (connection closed).
    protocol_violations,
    /// Frames above the size limit.
    oversized_frames,
    /// Frames cut off by their stream's end, a reset or a lost connection
    /// (nothing of them applied).
    partial_frames,
    /// PINGS frames received on streams, and their records.
    ping_frames,
    pings_received,
    /// Records on ping streams of a role that may not send pings (acknowledged, all rejected).
    pings_forbidden,
    /// Records handed to the engine (streams and datagrams).
    pings_accepted,
    /// Records refused as invalid, all reasons (the six below).
    pings_invalid,
    /// Latitude or longitude out of range.
    pings_rejected_position,
    /// Time not positive or before 2000-01-01 (an unset device clock).
    pings_rejected_time,
    /// Further in the future than `limits.max_future_s`.
    pings_rejected_future,
    /// Further behind the watermark than `limits.max_past_s`.
    pings_rejected_past,
    /// Reported speed above `limits.max_speed_mps`.
    pings_rejected_speed,
    /// Heading out of range or reserved flags set.
    pings_rejected_field,
    /// Records for a vehicle outside the token's fleet.
    pings_out_of_scope,
    /// Datagram records dropped because a shard queue was full or memory
    /// was over the bound.
    pings_shed,
    /// Of those, dropped for memory.
    pings_shed_memory,
    /// Times a ping stream waited for room in the engine's queues.
    backpressure_waits,
    datagrams_received,
    /// Datagrams dropped whole (malformed, or not allowed for the role).
    datagrams_dropped,
    acks_sent,
    requests,
    /// Requests answered with an ERROR frame.
    request_errors,
    commands_applied,
    subscriptions_opened,
    /// Subscriptions asked from beyond the log's end (started at its end).
    subscriptions_from_beyond,
    subscriptions_refused,
    events_sent,
    /// Events a slow subscriber missed (told with a LOST frame).
    events_lost,
    tracking_tokens_minted,
}

impl ServerStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Counts a frame whose header was refused; returns its error code.
    pub fn bad_frame(&self, e: &crate::protocol::DecodeError) -> crate::protocol::ErrorCode {
        let code = crate::protocol::ErrorCode::of_decode(e);
        let counter = if code == crate::protocol::ErrorCode::FrameTooLarge {
            &self.oversized_frames
        } else {
            &self.malformed_frames
        };
        Self::add(counter, 1);
        code
    }
}
