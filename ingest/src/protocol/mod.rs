//! The wire protocol (PROTOCOL.md is its specification): constants, frame
//! types, error codes and roles, the fixed-size ping record, and every
//! message's encoder and decoder. Sans-IO: frames in, frames out, so the
//! server, the Rust client and the tests share one codec, and a decoder
//! bug is found on bytes, not on sockets.

pub mod codec;
pub mod messages;
pub mod ping;
pub mod records;
mod requests;
mod responses;
#[cfg(test)]
mod round_trip;

pub use codec::{DecodeError, FrameHeader, Reader, Writer, split_frame, write_frame};
pub use messages::*;
pub use ping::{PING_RECORD_LEN, PingBatch, PingError, PingRecord};

/// ALPN identifier; a server refuses a handshake that does not offer it.
pub const ALPN: &[u8] = b"lastmile/1";
/// The newest protocol version, offered in HELLO ([`Version`] agrees one).
pub const VERSION: u16 = Version::LATEST as u16;
/// Ids from here on are the engine's own, allocated to names
/// ([`lastmile_node::ids`]); a version-1 client sees them for names that
/// are not numbers.
pub const ALLOCATED_ID: u64 = lastmile_node::ids::ALLOCATED;
/// Roles are the node's (tokens are configured there); WELCOME carries one.
pub use lastmile_node::Role;
/// Bytes of the header in front of every frame.
pub const FRAME_HEADER_LEN: usize = 8;
/// Default (and the largest a server may announce) frame payload size.
pub const MAX_FRAME_LEN: usize = lastmile_node::config::MAX_FRAME_LEN;
/// Longest token, stop customer reference, proof reference or reason.
pub const MAX_STR_LEN: usize = 4096;
/// Most stops in one route, vehicles or stops in one subscription filter.
pub const MAX_LIST_LEN: usize = 10_000;
/// Most vehicles one NEAREST query may ask for.
pub const MAX_NEAREST: usize = lastmile_node::dispatch::MAX_NEAREST;
/// Most vehicles returned by one IN_BOX query (the reply says if cut).
pub const MAX_IN_BOX: usize = lastmile_node::dispatch::MAX_IN_BOX;
/// Points in one HISTORY reply at most (the rest: ask again from the last).
pub const MAX_HISTORY_POINTS: usize = 20_000;

/// Frame types (the `type` field of the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum FrameType {
    Hello = 0x0001,
    Welcome = 0x0002,
    Pings = 0x0010,
    Ack = 0x0011,
    Bind = 0x0012,
    GetVehicle = 0x0020,
    Vehicle = 0x0021,
    GetStop = 0x0022,
    Stop = 0x0023,
    Nearest = 0x0024,
    InBox = 0x0025,
    Vehicles = 0x0026,
    GetHistory = 0x0027,
    History = 0x0028,
    AssignRoute = 0x0030,
    AddStop = 0x0031,
    RemoveStop = 0x0032,
    Reorder = 0x0033,
    Complete = 0x0034,
    Fail = 0x0035,
    Reassign = 0x0036,
    CreateTrackingToken = 0x0037,
    TrackingToken = 0x0038,
    Upkeep = 0x0039,
    Ok = 0x003F,
    Subscribe = 0x0040,
    Subscribed = 0x0041,
    Events = 0x0042,
    Lost = 0x0043,
    GetStats = 0x0050,
    Stats = 0x0051,
    PutZones = 0x0060,
    RemoveZones = 0x0061,
    GetZones = 0x0062,
    Zones = 0x0063,
    Error = 0x007F,
}

impl FrameType {
    pub const ALL: [FrameType; 36] = [
        Self::Hello,
        Self::Welcome,
        Self::Pings,
        Self::Ack,
        Self::Bind,
        Self::GetVehicle,
        Self::Vehicle,
        Self::GetStop,
        Self::Stop,
        Self::Nearest,
        Self::InBox,
        Self::Vehicles,
        Self::GetHistory,
        Self::History,
        Self::AssignRoute,
        Self::AddStop,
        Self::RemoveStop,
        Self::Reorder,
        Self::Complete,
        Self::Fail,
        Self::Reassign,
        Self::CreateTrackingToken,
        Self::TrackingToken,
        Self::Upkeep,
        Self::Ok,
        Self::Subscribe,
        Self::Subscribed,
        Self::Events,
        Self::Lost,
        Self::GetStats,
        Self::Stats,
        Self::PutZones,
        Self::RemoveZones,
        Self::GetZones,
        Self::Zones,
        Self::Error,
    ];

    pub fn from_u16(v: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|t| *t as u16 == v)
    }
}

/// Error codes: in ERROR frames, and as QUIC application close / stream
/// reset codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ErrorCode {
    NoError = 0,
    /// A frame that is not allowed where it was sent (wrong stream, HELLO
    /// twice, unknown type): the connection is closed.
    ProtocolViolation = 1,
    UnsupportedVersion = 2,
    /// Missing or wrong token: the connection is closed.
    Unauthenticated = 3,
    /// The token's role or fleet does not cover the request.
    Forbidden = 4,
    FrameTooLarge = 5,
    /// The payload does not decode: the stream is closed.
    Malformed = 6,
    NotFound = 7,
    /// The engine's queue stayed full: try again later.
    Overloaded = 8,
    /// Too many connections or streams.
    LimitExceeded = 9,
    Internal = 10,
    /// No HELLO within the server's handshake time.
    HelloTimeout = 11,
    ShuttingDown = 12,
    UnknownStop = 20,
    WrongVehicle = 21,
    DuplicateStop = 22,
    StopClosed = 23,
    OffRoad = 24,
    BadOrder = 25,
    /// A field out of range (NaN, latitude 91°, a window ending before it starts).
    BadValue = 26,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 20] = [
        Self::NoError,
        Self::ProtocolViolation,
        Self::UnsupportedVersion,
        Self::Unauthenticated,
        Self::Forbidden,
        Self::FrameTooLarge,
        Self::Malformed,
        Self::NotFound,
        Self::Overloaded,
        Self::LimitExceeded,
        Self::Internal,
        Self::HelloTimeout,
        Self::ShuttingDown,
        Self::UnknownStop,
        Self::WrongVehicle,
        Self::DuplicateStop,
        Self::StopClosed,
        Self::OffRoad,
        Self::BadOrder,
        Self::BadValue,
    ];

    pub fn from_u16(v: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| *c as u16 == v)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoError => "no_error",
            Self::ProtocolViolation => "protocol_violation",
            Self::UnsupportedVersion => "unsupported_version",
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::FrameTooLarge => "frame_too_large",
            Self::Malformed => "malformed",
            Self::NotFound => "not_found",
            Self::Overloaded => "overloaded",
            Self::LimitExceeded => "limit_exceeded",
            Self::Internal => "internal",
            Self::HelloTimeout => "hello_timeout",
            Self::ShuttingDown => "shutting_down",
            Self::UnknownStop => "unknown_stop",
            Self::WrongVehicle => "wrong_vehicle",
            Self::DuplicateStop => "duplicate_stop",
            Self::StopClosed => "stop_closed",
            Self::OffRoad => "off_road",
            Self::BadOrder => "bad_order",
            Self::BadValue => "bad_value",
        }
    }

    /// The error code a decoding failure is answered with.
    pub fn of_decode(e: &DecodeError) -> Self {
        match e {
            DecodeError::FrameTooLarge { .. } => Self::FrameTooLarge,
            DecodeError::UnknownType(_) | DecodeError::ReservedBits => Self::ProtocolViolation,
            _ => Self::Malformed,
        }
    }

    /// The error code of a refusal the node made (same names).
    pub fn of_refusal(kind: lastmile_node::dispatch::RefusalKind) -> Self {
        use lastmile_node::dispatch::RefusalKind as K;
        match kind {
            K::NotFound => Self::NotFound,
            K::UnknownStop => Self::UnknownStop,
            K::Forbidden => Self::Forbidden,
            K::BadValue => Self::BadValue,
            K::LimitExceeded => Self::LimitExceeded,
            K::WrongVehicle => Self::WrongVehicle,
            K::DuplicateStop => Self::DuplicateStop,
            K::StopClosed => Self::StopClosed,
            K::OffRoad => Self::OffRoad,
            K::BadOrder => Self::BadOrder,
            // No QUIC request rates a stop; the nearest code.
            K::Conflict => Self::BadValue,
            K::Overloaded => Self::Overloaded,
            K::Internal => Self::Internal,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        for t in FrameType::ALL {
            assert_eq!(FrameType::from_u16(t as u16), Some(t));
        }
        let mut seen = std::collections::HashSet::new();
        assert!(FrameType::ALL.iter().all(|t| seen.insert(*t as u16)));
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_u16(c as u16), Some(c));
        }
        assert_eq!(FrameType::from_u16(0xBEEF), None);
        for r in 1..=5 {
            assert_eq!(Role::from_u8(r).unwrap() as u8, r);
        }
    }
}
