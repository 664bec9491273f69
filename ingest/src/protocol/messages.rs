//! Every message other than the ping record, as Rust values: the
//! handshake (HELLO / WELCOME, with its encoder and decoder here),
//! acknowledgements, queries, commands, the event stream and errors. Their
//! byte layouts, which differ between protocol versions, are in
//! [`records`](super::records), [`requests`](super::requests) and
//! [`responses`](super::responses).
//!
//! Vehicles and stops are named by strings, as their fleet names them
//! ([`crate::ids`]): version 2 carries the strings; version 1 carries
//! numbers, which these values hold as their decimal strings (and `#N`
//! for numbers from 2^62 on, the engine's own ids).

use super::codec::{DecodeError, Reader, write_frame};
use super::{ErrorCode, FrameType, MAX_STR_LEN, Role};

/// A version of the protocol, agreed in HELLO / WELCOME.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// Numeric ids, one ETA number per stop.
    V1 = 1,
    /// Ids as strings, ETA state and window, stop snapping, zones, BIND.
    V2 = 2,
    /// Events carry the arrival window of the ETA they announce.
    V3 = 3,
    /// SUBSCRIBE's kind mask is 64 bits (kinds from 32 on can be chosen);
    /// a vehicle carries its lifetime odometer and moving time.
    V4 = 4,
}

impl Version {
    /// The newest this implementation speaks.
    pub const LATEST: Self = Self::V4;

    /// The version a connection uses when the client speaks up to `asked`.
    pub fn agree(asked: u16) -> Option<Self> {
        match asked {
            0 => None,
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            3 => Some(Self::V3),
            _ => Some(Self::V4),
        }
    }

    pub fn from_u16(v: u16) -> Option<Self> {
        match v {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            3 => Some(Self::V3),
            4 => Some(Self::V4),
            _ => None,
        }
    }
}

/// Stand-in for "no time" in `*_ms` fields.
pub const NO_TIME: i64 = 0;
/// `index` value meaning "at the end".
pub const AT_END: u32 = u32::MAX;
/// SUBSCRIBE `from` value meaning "only events published from now on".
pub const FROM_NOW: u64 = u64::MAX;

/// First frame on the control stream (client → server).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    pub version: u16,
    pub token: String,
}

/// The server's answer to a good HELLO.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Welcome {
    pub version: u16,
    pub role: Role,
    /// Largest frame payload the server accepts.
    pub max_frame: u32,
    /// Most pings per PINGS frame on a stream.
    pub max_batch: u32,
    /// Most pings per datagram at the connection's current datagram size.
    pub datagram_batch: u32,
    /// The server's clock (event time), ms since the epoch.
    pub clock_ms: i64,
    /// The token's fleet ("" for admin tokens).
    pub fleet: String,
}

/// Acknowledges one PINGS frame received on a stream (on the control stream).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    pub batch_id: u64,
    /// Handed to the engine.
    pub accepted: u32,
    /// Refused: invalid record, or a vehicle outside the token's fleet.
    pub rejected: u32,
}

/// A stop as a dispatcher plans it.
#[derive(Clone, Debug, PartialEq)]
pub struct WireStop {
    pub id: String,
    pub lat_e7: i32,
    pub lon_e7: i32,
    /// Promised window, ms since the epoch ([`NO_TIME`] both: no window).
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    /// Expected service duration, seconds.
    pub service_s: f32,
    pub customer_ref: String,
}

/// Proof of delivery sent with COMPLETE.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct WireProof {
    /// Where the driver completed it (absent if `None`).
    pub pos_e7: Option<(i32, i32)>,
    pub signature_ref: String,
    pub note: String,
    pub photo_refs: Vec<String>,
}

/// What is known of a stop's ETA (version 2; version 1 has only `eta_ms` 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum EtaStateCode {
    /// Not computed yet (or after an unreachable stop).
    Unknown = 0,
    Known = 1,
    /// No road leads there (from the vehicle, or from the stop before).
    Unreachable = 2,
}

impl EtaStateCode {
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => Self::Unknown,
            1 => Self::Known,
            2 => Self::Unreachable,
            _ => return Err(DecodeError::BadValue("eta state")),
        })
    }

    pub fn as_str(self) -> &'static str {
        ["unknown", "known", "unreachable"][self as usize]
    }
}

/// An arrival estimate: the expected time and (version 2) its state and
/// window, each time [`NO_TIME`] when there is none.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WireEta {
    pub state: EtaStateCode,
    /// Expected arrival (remaining stops), arrival time (others).
    pub eta_ms: i64,
    /// The window the arrival falls in four times out of five: 10th and
    /// 90th percentiles ([`NO_TIME`]: no window computed).
    pub p10_ms: i64,
    pub p90_ms: i64,
}

/// One stop in a VEHICLE reply.
#[derive(Clone, Debug, PartialEq)]
pub struct WireStopEta {
    pub stop: String,
    pub eta: WireEta,
    pub window_end_ms: i64,
    /// Road metres still to drive; NaN unknown.
    pub remaining_m: f32,
    pub stops_before: u32,
    pub status: StopStatusCode,
    pub late: bool,
    /// Likely to miss its window (version 3; false before).
    pub at_risk: bool,
}

/// Stop status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StopStatusCode {
    Pending = 0,
    Next = 1,
    Arrived = 2,
    Completed = 3,
    Failed = 4,
}

impl StopStatusCode {
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => Self::Pending,
            1 => Self::Next,
            2 => Self::Arrived,
            3 => Self::Completed,
            4 => Self::Failed,
            _ => return Err(DecodeError::BadValue("stop status")),
        })
    }

    pub fn as_str(self) -> &'static str {
        ["pending", "next", "arrived", "completed", "failed"][self as usize]
    }
}

/// Match status codes of the vehicle's last ping (8, `break`, is sent
/// from version 2 on; version 1 says 2, `reset`).
pub const MATCH_STATUS_NAMES: [&str; 9] = [
    "none",
    "matched",
    "reset",
    "unmatched",
    "outlier",
    "out_of_order",
    "duplicate",
    "invalid",
    "break",
];
/// The `break` match status: a fix no road from the chain leads to.
pub const MATCH_BREAK: u8 = 8;

/// VEHICLE: a vehicle's live state and its stops.
#[derive(Clone, Debug, PartialEq)]
pub struct WireVehicle {
    pub vehicle: String,
    /// Last ping taken, and last matched position, ms ([`NO_TIME`] none).
    pub time_ms: i64,
    pub matched_time_ms: i64,
    /// Matched position (both 0 and `has_position` false before the first match).
    pub lat_e7: i32,
    pub lon_e7: i32,
    pub has_position: bool,
    pub edge: u32,
    /// OSM way of the matched edge (0 none).
    pub way_id: i64,
    pub offset_m: f32,
    pub speed_mps: f32,
    /// NaN unknown.
    pub heading_deg: f32,
    pub odometer_m: f64,
    /// Version 4: metres of matched path and seconds moving since the
    /// vehicle was first seen (0 in earlier versions).
    pub lifetime_odometer_m: f64,
    pub moving_s: f64,
    /// Version 4: the vehicle's service counts: since when (its last
    /// service, or when it was first seen; [`NO_TIME`] neither), metres
    /// and moving seconds since then, and which service intervals are
    /// reached (1 distance, 2 moving time, 4 calendar; 0 not due).
    pub service_since_ms: i64,
    pub service_driven_m: f64,
    pub service_moving_s: f64,
    pub service_due: u8,
    /// Index into [`MATCH_STATUS_NAMES`].
    pub match_status: u8,
    pub moving: bool,
    pub online: bool,
    pub off_route: bool,
    pub next_stop: Option<String>,
    pub stops: Vec<WireStopEta>,
}

/// STOP: one stop's plan, status and ETA.
#[derive(Clone, Debug, PartialEq)]
pub struct WireStopView {
    pub stop: String,
    pub vehicle: String,
    pub status: StopStatusCode,
    pub late: bool,
    /// Likely to miss its window (version 3; false before).
    pub at_risk: bool,
    /// Remaining stops before this one (meaningful while open).
    pub stops_before: u32,
    pub eta: WireEta,
    pub remaining_m: f32,
    pub lat_e7: i32,
    pub lon_e7: i32,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub service_s: f32,
    /// How far the stop's coordinates lie from the road it was placed on,
    /// m (NaN: not placed), and that road's connected component (0 the
    /// main network). Version 2.
    pub snap_m: f32,
    pub snap_component: u32,
    /// The vehicle's last position and its time, when the caller may see it.
    pub vehicle_pos: Option<(i32, i32, i64)>,
    /// When it was completed or failed ([`NO_TIME`] while open).
    pub closed_ms: i64,
    pub customer_ref: String,
    /// The failure reason, or the delivery note of a completed stop.
    pub outcome_text: String,
}

/// One vehicle in a NEAREST / IN_BOX reply.
#[derive(Clone, Debug, PartialEq)]
pub struct WireFound {
    pub vehicle: String,
    pub lat_e7: i32,
    pub lon_e7: i32,
    pub time_ms: i64,
    pub distance_m: f32,
    pub speed_mps: f32,
}

/// One event.
#[derive(Clone, Debug, PartialEq)]
pub struct WireEvent {
    /// Position in the server's event log (increasing, no gaps).
    pub id: u64,
    pub vehicle: String,
    /// The vehicle's own event counter.
    pub seq: u64,
    pub stop: Option<String>,
    /// The zone it is about (version 2; none yet from this server).
    pub zone: Option<String>,
    pub time_ms: i64,
    /// Event kind code (1 `eta_changed` … PROTOCOL.md).
    pub kind: u8,
    pub lat_e7: i32,
    pub lon_e7: i32,
    pub value: f64,
    pub reference: f64,
    /// Version 3: when `value` is a stop's ETA, its P10 and P90
    /// ([`NO_TIME`] otherwise, and in versions 1 and 2).
    pub eta_p10_ms: i64,
    pub eta_p90_ms: i64,
}

/// One vertex of a vehicle's matched path (the node's, as HISTORY carries it).
pub use lastmile_node::history::{PATH_BREAK, PATH_INTERPOLATED, PathPoint as WirePathPoint};

/// Requests, sent on bidirectional streams (client → server).
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    GetVehicle {
        vehicle: String,
    },
    GetStop {
        stop: String,
    },
    Nearest {
        lat_e7: i32,
        lon_e7: i32,
        k: u32,
    },
    InBox {
        min_lat_e7: i32,
        min_lon_e7: i32,
        max_lat_e7: i32,
        max_lon_e7: i32,
    },
    AssignRoute {
        vehicle: String,
        time_ms: i64,
        stops: Vec<WireStop>,
    },
    AddStop {
        vehicle: String,
        time_ms: i64,
        index: u32,
        stop: WireStop,
    },
    RemoveStop {
        vehicle: String,
        time_ms: i64,
        stop: String,
    },
    Reorder {
        vehicle: String,
        time_ms: i64,
        order: Vec<String>,
    },
    Complete {
        vehicle: String,
        time_ms: i64,
        stop: String,
        proof: WireProof,
    },
    Fail {
        vehicle: String,
        time_ms: i64,
        stop: String,
        reason: String,
    },
    Reassign {
        stop: String,
        to_vehicle: String,
        time_ms: i64,
        index: u32,
    },
    CreateTrackingToken {
        stop: String,
        ttl_s: u32,
    },
    Subscribe {
        from: u64,
        /// OR of `1 << kind`; 0 every kind (versions 1 to 3 send 32 bits:
        /// kinds from 32 on come only with 0).
        kinds: u64,
        vehicles: Vec<String>,
        stops: Vec<String>,
    },
    GetStats,
    /// Version 2: ping aliases for this connection's vehicles (each
    /// `(alias, vehicle)`), so ping records stay 32 bytes.
    Bind {
        vehicles: Vec<(u64, String)>,
    },
    /// A vehicle's matched path between two times (ms; [`NO_TIME`]: open).
    GetHistory {
        vehicle: String,
        from_ms: i64,
        to_ms: i64,
    },
    /// Version 2: zones of the caller's fleet from a GeoJSON
    /// `FeatureCollection`, added or replacing those of the same ids.
    PutZones {
        time_ms: i64,
        geojson: String,
    },
    /// Version 2: zones of the caller's fleet removed, by id.
    RemoveZones {
        time_ms: i64,
        zones: Vec<String>,
    },
    /// Version 2: the caller's fleet's zones (answered by ZONES).
    GetZones,
    /// Version 4: a vehicle was serviced, and/or its odometer reads
    /// `odometer_m` (NaN: unchanged).
    Upkeep {
        vehicle: String,
        time_ms: i64,
        serviced: bool,
        odometer_m: f64,
    },
}

/// Replies, on the request's stream (server → client).
#[derive(Clone, Debug, PartialEq)]
pub enum Response {
    Vehicle(WireVehicle),
    Stop(WireStopView),
    Vehicles {
        truncated: bool,
        found: Vec<WireFound>,
    },
    /// The path as points in time order; `truncated`: more follow the last.
    History {
        truncated: bool,
        points: Vec<WirePathPoint>,
    },
    /// The fleet's zones, a GeoJSON `FeatureCollection`.
    Zones {
        geojson: String,
    },
    Ok,
    TrackingToken {
        token: String,
        expires_ms: i64,
    },
    Subscribed {
        next_id: u64,
    },
    Events(Vec<WireEvent>),
    Lost {
        count: u64,
    },
    Stats(Vec<(String, u64)>),
    Error {
        code: u16,
        message: String,
    },
}

impl Response {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code: code as u16,
            message: message.into(),
        }
    }
}

// ------------------------------------------------------------ handshake

impl Hello {
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_frame(out, FrameType::Hello, |w| {
            w.u16(self.version).u16(0).str(&self.token);
        });
    }

    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let version = r.u16()?;
        r.u16()?;
        let token = r.str("token", MAX_STR_LEN)?.to_string();
        r.finish()?;
        Ok(Self { version, token })
    }
}

impl Welcome {
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_frame(out, FrameType::Welcome, |w| {
            w.u16(self.version).u8(self.role as u8).u8(0);
            w.u32(self.max_frame)
                .u32(self.max_batch)
                .u32(self.datagram_batch);
            w.i64(self.clock_ms).str(&self.fleet);
        });
    }

    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let version = r.u16()?;
        let role = Role::from_u8(r.u8()?).ok_or(DecodeError::BadValue("role"))?;
        r.u8()?;
        let w = Self {
            version,
            role,
            max_frame: r.u32()?,
            max_batch: r.u32()?,
            datagram_batch: r.u32()?,
            clock_ms: r.i64()?,
            fleet: r.str("fleet", MAX_STR_LEN)?.to_string(),
        };
        r.finish()?;
        Ok(w)
    }
}

impl Ack {
    pub fn encode(&self, out: &mut Vec<u8>) {
        write_frame(out, FrameType::Ack, |w| {
            w.u64(self.batch_id).u32(self.accepted).u32(self.rejected);
        });
    }

    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let a = Self {
            batch_id: r.u64()?,
            accepted: r.u32()?,
            rejected: r.u32()?,
        };
        r.finish()?;
        Ok(a)
    }
}
