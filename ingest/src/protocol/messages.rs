//! Every message other than the ping record: the handshake (HELLO /
//! WELCOME), acknowledgements, queries, commands, the event stream and
//! errors, each with its encoder and decoder. Field layouts are the ones in
//! PROTOCOL.md; a test encodes and decodes every variant, and feeds every
//! truncation and random bytes to the decoders.

use super::codec::{DecodeError, Reader, Writer, write_frame};
use super::{
    ErrorCode, FrameType, MAX_HISTORY_POINTS, MAX_IN_BOX, MAX_LIST_LEN, MAX_STR_LEN, Role,
};

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
    pub id: u64,
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

/// One stop in a VEHICLE reply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WireStopEta {
    pub stop: u64,
    /// Expected arrival (remaining stops), arrival time (others); [`NO_TIME`] unknown.
    pub eta_ms: i64,
    pub window_end_ms: i64,
    /// Road metres still to drive; NaN unknown.
    pub remaining_m: f32,
    pub stops_before: u32,
    pub status: StopStatusCode,
    pub late: bool,
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

/// Match status codes of the vehicle's last ping.
pub const MATCH_STATUS_NAMES: [&str; 8] = [
    "none",
    "matched",
    "reset",
    "unmatched",
    "outlier",
    "out_of_order",
    "duplicate",
    "invalid",
];

/// VEHICLE: a vehicle's live state and its stops.
#[derive(Clone, Debug, PartialEq)]
pub struct WireVehicle {
    pub vehicle: u64,
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
    /// Index into [`MATCH_STATUS_NAMES`].
    pub match_status: u8,
    pub moving: bool,
    pub online: bool,
    pub off_route: bool,
    pub next_stop: Option<u64>,
    pub stops: Vec<WireStopEta>,
}

/// STOP: one stop's plan, status and ETA.
#[derive(Clone, Debug, PartialEq)]
pub struct WireStopView {
    pub stop: u64,
    pub vehicle: u64,
    pub status: StopStatusCode,
    pub late: bool,
    /// Remaining stops before this one (meaningful while open).
    pub stops_before: u32,
    pub eta_ms: i64,
    pub remaining_m: f32,
    pub lat_e7: i32,
    pub lon_e7: i32,
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub service_s: f32,
    /// The vehicle's last position and its time, when the caller may see it.
    pub vehicle_pos: Option<(i32, i32, i64)>,
    /// When it was completed or failed ([`NO_TIME`] while open).
    pub closed_ms: i64,
    pub customer_ref: String,
    /// The failure reason, or the delivery note of a completed stop.
    pub outcome_text: String,
}

/// One vehicle in a NEAREST / IN_BOX reply.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WireFound {
    pub vehicle: u64,
    pub lat_e7: i32,
    pub lon_e7: i32,
    pub time_ms: i64,
    pub distance_m: f32,
    pub speed_mps: f32,
}

/// One event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WireEvent {
    /// Position in the server's event log (increasing, no gaps).
    pub id: u64,
    pub vehicle: u64,
    /// The vehicle's own event counter.
    pub seq: u64,
    pub stop: Option<u64>,
    pub time_ms: i64,
    /// Event kind code (1 `eta_changed` … 16 `stop_unreachable`, PROTOCOL.md).
    pub kind: u8,
    pub lat_e7: i32,
    pub lon_e7: i32,
    pub value: f64,
    pub reference: f64,
}

/// Requests, sent on bidirectional streams (client → server).
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    GetVehicle {
        vehicle: u64,
    },
    GetStop {
        stop: u64,
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
        vehicle: u64,
        time_ms: i64,
        stops: Vec<WireStop>,
    },
    AddStop {
        vehicle: u64,
        time_ms: i64,
        index: u32,
        stop: WireStop,
    },
    RemoveStop {
        vehicle: u64,
        time_ms: i64,
        stop: u64,
    },
    Reorder {
        vehicle: u64,
        time_ms: i64,
        order: Vec<u64>,
    },
    Complete {
        vehicle: u64,
        time_ms: i64,
        stop: u64,
        proof: WireProof,
    },
    Fail {
        vehicle: u64,
        time_ms: i64,
        stop: u64,
        reason: String,
    },
    Reassign {
        stop: u64,
        to_vehicle: u64,
        time_ms: i64,
        index: u32,
    },
    CreateTrackingToken {
        stop: u64,
        ttl_s: u32,
    },
    Subscribe {
        from: u64,
        /// OR of `1 << kind`; 0 every kind.
        kinds: u32,
        vehicles: Vec<u64>,
        stops: Vec<u64>,
    },
    GetStats,
    /// A vehicle's matched path between two times (ms; [`NO_TIME`]: open).
    GetHistory {
        vehicle: u64,
        from_ms: i64,
        to_ms: i64,
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

// ---------------------------------------------------------- sub-records

impl WireStop {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u64(self.id).i32(self.lat_e7).i32(self.lon_e7);
        w.i64(self.window_start_ms).i64(self.window_end_ms);
        w.f32(self.service_s).u32(0).str(&self.customer_ref);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let s = Self {
            id: r.u64()?,
            lat_e7: r.i32()?,
            lon_e7: r.i32()?,
            window_start_ms: r.i64()?,
            window_end_ms: r.i64()?,
            service_s: r.f32()?,
            customer_ref: {
                r.u32()?;
                r.str("customer_ref", MAX_STR_LEN)?.to_string()
            },
        };
        Ok(s)
    }
}

/// Bytes of a [`WireStop`] before its string.
const WIRE_STOP_FIXED: usize = 42;

impl WireProof {
    fn encode(&self, w: &mut Writer<'_>) {
        let (lat, lon) = self.pos_e7.unwrap_or((0, 0));
        w.u8(self.pos_e7.is_some() as u8)
            .u8(0)
            .u16(0)
            .i32(lat)
            .i32(lon);
        w.str(&self.signature_ref).str(&self.note);
        w.u16(self.photo_refs.len().min(u16::MAX as usize) as u16);
        for p in self.photo_refs.iter().take(u16::MAX as usize) {
            w.str(p);
        }
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let has_pos = flag(r.u8()?, "proof position flag")?;
        r.u8()?;
        r.u16()?;
        let (lat, lon) = (r.i32()?, r.i32()?);
        let signature_ref = r.str("signature_ref", MAX_STR_LEN)?.to_string();
        let note = r.str("note", MAX_STR_LEN)?.to_string();
        let n = r.u16()? as usize;
        if n > 64 {
            return Err(DecodeError::TooLong {
                what: "photo_refs",
                len: n,
                max: 64,
            });
        }
        let photo_refs = (0..n)
            .map(|_| r.str("photo_ref", MAX_STR_LEN).map(str::to_string))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            pos_e7: has_pos.then_some((lat, lon)),
            signature_ref,
            note,
            photo_refs,
        })
    }
}

fn flag(v: u8, what: &'static str) -> Result<bool, DecodeError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::BadValue(what)),
    }
}

const STOP_ETA_LEN: usize = 36;

impl WireStopEta {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u64(self.stop).i64(self.eta_ms).i64(self.window_end_ms);
        w.f32(self.remaining_m).u32(self.stops_before);
        w.u8(self.status as u8).u8(self.late as u8).u16(0);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let s = Self {
            stop: r.u64()?,
            eta_ms: r.i64()?,
            window_end_ms: r.i64()?,
            remaining_m: r.f32()?,
            stops_before: r.u32()?,
            status: StopStatusCode::from_u8(r.u8()?)?,
            late: flag(r.u8()?, "late flag")?,
        };
        r.u16()?;
        Ok(s)
    }
}

const FOUND_LEN: usize = 32;

impl WireFound {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u64(self.vehicle)
            .i32(self.lat_e7)
            .i32(self.lon_e7)
            .i64(self.time_ms);
        w.f32(self.distance_m).f32(self.speed_mps);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            vehicle: r.u64()?,
            lat_e7: r.i32()?,
            lon_e7: r.i32()?,
            time_ms: r.i64()?,
            distance_m: r.f32()?,
            speed_mps: r.f32()?,
        })
    }
}

/// One vertex of a vehicle's matched path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WirePathPoint {
    pub time_ms: i64,
    pub lat_e7: i32,
    pub lon_e7: i32,
    /// The road graph edge it lies on.
    pub edge: u32,
    /// [`PATH_BREAK`]: not connected to the previous point (the match
    /// restarted after a gap); [`PATH_INTERPOLATED`]: placed at a window's
    /// edge between two points of the path.
    pub flags: u32,
}

/// Flag of a path point that starts a new piece of path.
pub const PATH_BREAK: u32 = 1;
/// Flag of a point that is not one of the path's own but interpolated at
/// the edge of the asked time window, between two that are.
pub const PATH_INTERPOLATED: u32 = 2;
const PATH_POINT_LEN: usize = 24;

impl WirePathPoint {
    fn encode(&self, w: &mut Writer<'_>) {
        w.i64(self.time_ms).i32(self.lat_e7).i32(self.lon_e7);
        w.u32(self.edge).u32(self.flags);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let p = Self {
            time_ms: r.i64()?,
            lat_e7: r.i32()?,
            lon_e7: r.i32()?,
            edge: r.u32()?,
            flags: r.u32()?,
        };
        if p.flags & !(PATH_BREAK | PATH_INTERPOLATED) != 0 {
            return Err(DecodeError::BadValue("path point flags"));
        }
        Ok(p)
    }
}

/// Bytes per event record.
pub const EVENT_LEN: usize = 72;

impl WireEvent {
    fn encode(&self, w: &mut Writer<'_>) {
        w.u64(self.id).u64(self.vehicle).u64(self.seq);
        w.u64(self.stop.unwrap_or(0)).i64(self.time_ms);
        w.u8(self.kind).u8(self.stop.is_some() as u8).u16(0);
        w.i32(self.lat_e7)
            .i32(self.lon_e7)
            .f64(self.value)
            .f64(self.reference)
            .u32(0);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let (id, vehicle, seq, stop, time_ms) = (r.u64()?, r.u64()?, r.u64()?, r.u64()?, r.i64()?);
        let kind = r.u8()?;
        let has_stop = flag(r.u8()?, "event stop flag")?;
        r.u16()?;
        let e = Self {
            id,
            vehicle,
            seq,
            stop: has_stop.then_some(stop),
            time_ms,
            kind,
            lat_e7: r.i32()?,
            lon_e7: r.i32()?,
            value: r.f64()?,
            reference: r.f64()?,
        };
        r.u32()?;
        Ok(e)
    }
}

// -------------------------------------------------------------- requests

impl Request {
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::GetVehicle { .. } => FrameType::GetVehicle,
            Self::GetStop { .. } => FrameType::GetStop,
            Self::Nearest { .. } => FrameType::Nearest,
            Self::InBox { .. } => FrameType::InBox,
            Self::AssignRoute { .. } => FrameType::AssignRoute,
            Self::AddStop { .. } => FrameType::AddStop,
            Self::RemoveStop { .. } => FrameType::RemoveStop,
            Self::Reorder { .. } => FrameType::Reorder,
            Self::Complete { .. } => FrameType::Complete,
            Self::Fail { .. } => FrameType::Fail,
            Self::Reassign { .. } => FrameType::Reassign,
            Self::CreateTrackingToken { .. } => FrameType::CreateTrackingToken,
            Self::Subscribe { .. } => FrameType::Subscribe,
            Self::GetStats => FrameType::GetStats,
            Self::GetHistory { .. } => FrameType::GetHistory,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        write_frame(out, self.frame_type(), |w| match self {
            Self::GetVehicle { vehicle } => {
                w.u64(*vehicle);
            }
            Self::GetHistory {
                vehicle,
                from_ms,
                to_ms,
            } => {
                w.u64(*vehicle).i64(*from_ms).i64(*to_ms);
            }
            Self::GetStop { stop } => {
                w.u64(*stop);
            }
            Self::Nearest { lat_e7, lon_e7, k } => {
                w.i32(*lat_e7).i32(*lon_e7).u32(*k);
            }
            Self::InBox {
                min_lat_e7,
                min_lon_e7,
                max_lat_e7,
                max_lon_e7,
            } => {
                w.i32(*min_lat_e7)
                    .i32(*min_lon_e7)
                    .i32(*max_lat_e7)
                    .i32(*max_lon_e7);
            }
            Self::AssignRoute {
                vehicle,
                time_ms,
                stops,
            } => {
                w.u64(*vehicle).i64(*time_ms).count(stops.len());
                for s in stops {
                    s.encode(w);
                }
            }
            Self::AddStop {
                vehicle,
                time_ms,
                index,
                stop,
            } => {
                w.u64(*vehicle).i64(*time_ms).u32(*index);
                stop.encode(w);
            }
            Self::RemoveStop {
                vehicle,
                time_ms,
                stop,
            } => {
                w.u64(*vehicle).i64(*time_ms).u64(*stop);
            }
            Self::Reorder {
                vehicle,
                time_ms,
                order,
            } => {
                w.u64(*vehicle).i64(*time_ms).count(order.len());
                for s in order {
                    w.u64(*s);
                }
            }
            Self::Complete {
                vehicle,
                time_ms,
                stop,
                proof,
            } => {
                w.u64(*vehicle).i64(*time_ms).u64(*stop);
                proof.encode(w);
            }
            Self::Fail {
                vehicle,
                time_ms,
                stop,
                reason,
            } => {
                w.u64(*vehicle).i64(*time_ms).u64(*stop).str(reason);
            }
            Self::Reassign {
                stop,
                to_vehicle,
                time_ms,
                index,
            } => {
                w.u64(*stop).u64(*to_vehicle).i64(*time_ms).u32(*index);
            }
            Self::CreateTrackingToken { stop, ttl_s } => {
                w.u64(*stop).u32(*ttl_s);
            }
            Self::Subscribe {
                from,
                kinds,
                vehicles,
                stops,
            } => {
                w.u64(*from).u32(*kinds).count(vehicles.len());
                for v in vehicles {
                    w.u64(*v);
                }
                w.count(stops.len());
                for s in stops {
                    w.u64(*s);
                }
            }
            Self::GetStats => {}
        });
    }

    pub fn decode(kind: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        let t = FrameType::from_u16(kind).ok_or(DecodeError::UnknownType(kind))?;
        let mut r = Reader::new(payload);
        let ids = |r: &mut Reader<'_>, what| -> Result<Vec<u64>, DecodeError> {
            let n = r.count(what, MAX_LIST_LEN, 8)?;
            (0..n).map(|_| r.u64()).collect()
        };
        let req = match t {
            FrameType::GetVehicle => Self::GetVehicle { vehicle: r.u64()? },
            FrameType::GetStop => Self::GetStop { stop: r.u64()? },
            FrameType::GetHistory => Self::GetHistory {
                vehicle: r.u64()?,
                from_ms: r.i64()?,
                to_ms: r.i64()?,
            },
            FrameType::Nearest => Self::Nearest {
                lat_e7: r.i32()?,
                lon_e7: r.i32()?,
                k: r.u32()?,
            },
            FrameType::InBox => Self::InBox {
                min_lat_e7: r.i32()?,
                min_lon_e7: r.i32()?,
                max_lat_e7: r.i32()?,
                max_lon_e7: r.i32()?,
            },
            FrameType::AssignRoute => {
                let (vehicle, time_ms) = (r.u64()?, r.i64()?);
                let n = r.count("stops", MAX_LIST_LEN, WIRE_STOP_FIXED)?;
                let stops = (0..n)
                    .map(|_| WireStop::decode(&mut r))
                    .collect::<Result<_, _>>()?;
                Self::AssignRoute {
                    vehicle,
                    time_ms,
                    stops,
                }
            }
            FrameType::AddStop => Self::AddStop {
                vehicle: r.u64()?,
                time_ms: r.i64()?,
                index: r.u32()?,
                stop: WireStop::decode(&mut r)?,
            },
            FrameType::RemoveStop => Self::RemoveStop {
                vehicle: r.u64()?,
                time_ms: r.i64()?,
                stop: r.u64()?,
            },
            FrameType::Reorder => Self::Reorder {
                vehicle: r.u64()?,
                time_ms: r.i64()?,
                order: ids(&mut r, "order")?,
            },
            FrameType::Complete => Self::Complete {
                vehicle: r.u64()?,
                time_ms: r.i64()?,
                stop: r.u64()?,
                proof: WireProof::decode(&mut r)?,
            },
            FrameType::Fail => Self::Fail {
                vehicle: r.u64()?,
                time_ms: r.i64()?,
                stop: r.u64()?,
                reason: r.str("reason", MAX_STR_LEN)?.to_string(),
            },
            FrameType::Reassign => Self::Reassign {
                stop: r.u64()?,
                to_vehicle: r.u64()?,
                time_ms: r.i64()?,
                index: r.u32()?,
            },
            FrameType::CreateTrackingToken => Self::CreateTrackingToken {
                stop: r.u64()?,
                ttl_s: r.u32()?,
            },
            FrameType::Subscribe => Self::Subscribe {
                from: r.u64()?,
                kinds: r.u32()?,
                vehicles: ids(&mut r, "vehicles")?,
                stops: ids(&mut r, "stops")?,
            },
            FrameType::GetStats => Self::GetStats,
            _ => return Err(DecodeError::UnknownType(kind)),
        };
        r.finish()?;
        Ok(req)
    }
}

// ------------------------------------------------------------- responses

impl Response {
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::Vehicle(_) => FrameType::Vehicle,
            Self::Stop(_) => FrameType::Stop,
            Self::Vehicles { .. } => FrameType::Vehicles,
            Self::History { .. } => FrameType::History,
            Self::Ok => FrameType::Ok,
            Self::TrackingToken { .. } => FrameType::TrackingToken,
            Self::Subscribed { .. } => FrameType::Subscribed,
            Self::Events(_) => FrameType::Events,
            Self::Lost { .. } => FrameType::Lost,
            Self::Stats(_) => FrameType::Stats,
            Self::Error { .. } => FrameType::Error,
        }
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        write_frame(out, self.frame_type(), |w| match self {
            Self::Vehicle(v) => {
                w.u64(v.vehicle).i64(v.time_ms).i64(v.matched_time_ms);
                w.i32(v.lat_e7).i32(v.lon_e7).u32(v.edge).i64(v.way_id);
                w.f32(v.offset_m)
                    .f32(v.speed_mps)
                    .f32(v.heading_deg)
                    .f64(v.odometer_m);
                let flags = v.has_position as u8
                    | (v.moving as u8) << 1
                    | (v.online as u8) << 2
                    | (v.off_route as u8) << 3
                    | (v.next_stop.is_some() as u8) << 4;
                w.u8(v.match_status).u8(flags).u16(0);
                w.u64(v.next_stop.unwrap_or(0)).count(v.stops.len());
                for s in &v.stops {
                    s.encode(w);
                }
            }
            Self::Stop(s) => {
                w.u64(s.stop).u64(s.vehicle);
                let (vlat, vlon, vt) = s.vehicle_pos.unwrap_or((0, 0, NO_TIME));
                w.u8(s.status as u8)
                    .u8(s.late as u8 | (s.vehicle_pos.is_some() as u8) << 1);
                w.u16(0).u32(s.stops_before);
                w.i64(s.eta_ms)
                    .f32(s.remaining_m)
                    .i32(s.lat_e7)
                    .i32(s.lon_e7);
                w.i64(s.window_start_ms)
                    .i64(s.window_end_ms)
                    .f32(s.service_s);
                w.i32(vlat).i32(vlon).i64(vt).i64(s.closed_ms);
                w.str(&s.customer_ref).str(&s.outcome_text);
            }
            Self::Vehicles { truncated, found } => {
                w.u8(*truncated as u8).u8(0).u16(0).count(found.len());
                for f in found {
                    f.encode(w);
                }
            }
            Self::History { truncated, points } => {
                w.u8(*truncated as u8).u8(0).u16(0).count(points.len());
                for p in points {
                    p.encode(w);
                }
            }
            Self::Ok => {}
            Self::TrackingToken { token, expires_ms } => {
                w.i64(*expires_ms).str(token);
            }
            Self::Subscribed { next_id } => {
                w.u64(*next_id);
            }
            Self::Events(events) => {
                w.count(events.len());
                for e in events {
                    e.encode(w);
                }
            }
            Self::Lost { count } => {
                w.u64(*count);
            }
            Self::Stats(pairs) => {
                w.count(pairs.len());
                for (k, v) in pairs {
                    w.str(k).u64(*v);
                }
            }
            Self::Error { code, message } => {
                w.u16(*code).str(message);
            }
        });
    }

    pub fn decode(kind: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        let t = FrameType::from_u16(kind).ok_or(DecodeError::UnknownType(kind))?;
        let mut r = Reader::new(payload);
        let resp = match t {
            FrameType::Vehicle => {
                let (vehicle, time_ms, matched_time_ms) = (r.u64()?, r.i64()?, r.i64()?);
                let (lat_e7, lon_e7, edge, way_id) = (r.i32()?, r.i32()?, r.u32()?, r.i64()?);
                let (offset_m, speed_mps, heading_deg, odometer_m) =
                    (r.f32()?, r.f32()?, r.f32()?, r.f64()?);
                let match_status = r.u8()?;
                if match_status as usize >= MATCH_STATUS_NAMES.len() {
                    return Err(DecodeError::BadValue("match status"));
                }
                let flags = r.u8()?;
                r.u16()?;
                let next = r.u64()?;
                let n = r.count("stops", MAX_LIST_LEN, STOP_ETA_LEN)?;
                let stops = (0..n)
                    .map(|_| WireStopEta::decode(&mut r))
                    .collect::<Result<_, _>>()?;
                Self::Vehicle(WireVehicle {
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
                    match_status,
                    moving: flags & 2 != 0,
                    online: flags & 4 != 0,
                    off_route: flags & 8 != 0,
                    next_stop: (flags & 16 != 0).then_some(next),
                    stops,
                })
            }
            FrameType::Stop => {
                let (stop, vehicle) = (r.u64()?, r.u64()?);
                let status = StopStatusCode::from_u8(r.u8()?)?;
                let flags = r.u8()?;
                r.u16()?;
                let stops_before = r.u32()?;
                let (eta_ms, remaining_m, lat_e7, lon_e7) =
                    (r.i64()?, r.f32()?, r.i32()?, r.i32()?);
                let (window_start_ms, window_end_ms, service_s) = (r.i64()?, r.i64()?, r.f32()?);
                let (vlat, vlon, vt, closed_ms) = (r.i32()?, r.i32()?, r.i64()?, r.i64()?);
                Self::Stop(WireStopView {
                    stop,
                    vehicle,
                    status,
                    late: flags & 1 != 0,
                    stops_before,
                    eta_ms,
                    remaining_m,
                    lat_e7,
                    lon_e7,
                    window_start_ms,
                    window_end_ms,
                    service_s,
                    vehicle_pos: (flags & 2 != 0).then_some((vlat, vlon, vt)),
                    closed_ms,
                    customer_ref: r.str("customer_ref", MAX_STR_LEN)?.to_string(),
                    outcome_text: r.str("outcome", MAX_STR_LEN)?.to_string(),
                })
            }
            FrameType::Vehicles => {
                let truncated = flag(r.u8()?, "truncated flag")?;
                r.u8()?;
                r.u16()?;
                let n = r.count("vehicles", MAX_IN_BOX, FOUND_LEN)?;
                let found = (0..n)
                    .map(|_| WireFound::decode(&mut r))
                    .collect::<Result<_, _>>()?;
                Self::Vehicles { truncated, found }
            }
            FrameType::History => {
                let truncated = flag(r.u8()?, "truncated flag")?;
                r.u8()?;
                r.u16()?;
                let n = r.count("path points", MAX_HISTORY_POINTS, PATH_POINT_LEN)?;
                let points = (0..n)
                    .map(|_| WirePathPoint::decode(&mut r))
                    .collect::<Result<_, _>>()?;
                Self::History { truncated, points }
            }
            FrameType::Ok => Self::Ok,
            FrameType::TrackingToken => Self::TrackingToken {
                expires_ms: r.i64()?,
                token: r.str("token", MAX_STR_LEN)?.to_string(),
            },
            FrameType::Subscribed => Self::Subscribed { next_id: r.u64()? },
            FrameType::Events => {
                let n = r.count("events", usize::MAX, EVENT_LEN)?;
                Self::Events(
                    (0..n)
                        .map(|_| WireEvent::decode(&mut r))
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
        r.finish()?;
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::split_frame;

    fn stop(id: u64) -> WireStop {
        WireStop {
            id,
            lat_e7: 437_000_000,
            lon_e7: 74_000_000,
            window_start_ms: 1_000,
            window_end_ms: 2_000,
            service_s: 120.0,
            customer_ref: format!("order-{id}"),
        }
    }

    pub(crate) fn all_requests() -> Vec<Request> {
        vec![
            Request::GetVehicle { vehicle: 7 },
            Request::GetStop { stop: 8 },
            Request::Nearest {
                lat_e7: 1,
                lon_e7: -2,
                k: 10,
            },
            Request::InBox {
                min_lat_e7: -1,
                min_lon_e7: -2,
                max_lat_e7: 3,
                max_lon_e7: 4,
            },
            Request::AssignRoute {
                vehicle: 1,
                time_ms: 5,
                stops: vec![stop(1), stop(2)],
            },
            Request::AddStop {
                vehicle: 1,
                time_ms: 0,
                index: AT_END,
                stop: stop(3),
            },
            Request::RemoveStop {
                vehicle: 1,
                time_ms: 0,
                stop: 3,
            },
            Request::Reorder {
                vehicle: 1,
                time_ms: 9,
                order: vec![2, 1],
            },
            Request::Complete {
                vehicle: 1,
                time_ms: 9,
                stop: 2,
                proof: WireProof {
                    pos_e7: Some((5, 6)),
                    signature_ref: "sig/1".into(),
                    note: "left with neighbour".into(),
                    photo_refs: vec!["p/1.jpg".into(), "p/2.jpg".into()],
                },
            },
            Request::Fail {
                vehicle: 1,
                time_ms: 9,
                stop: 1,
                reason: "nobody home".into(),
            },
            Request::Reassign {
                stop: 4,
                to_vehicle: 2,
                time_ms: 0,
                index: 0,
            },
            Request::CreateTrackingToken {
                stop: 4,
                ttl_s: 3600,
            },
            Request::Subscribe {
                from: FROM_NOW,
                kinds: 0b110,
                vehicles: vec![1, 2],
                stops: vec![],
            },
            Request::GetStats,
            Request::GetHistory {
                vehicle: 4,
                from_ms: NO_TIME,
                to_ms: 1_767_225_600_000,
            },
        ]
    }

    pub(crate) fn all_responses() -> Vec<Response> {
        let eta = WireStopEta {
            stop: 3,
            eta_ms: 99,
            window_end_ms: 100,
            remaining_m: 1234.5,
            stops_before: 1,
            status: StopStatusCode::Pending,
            late: true,
        };
        vec![
            Response::Vehicle(WireVehicle {
                vehicle: 1,
                time_ms: 2,
                matched_time_ms: 3,
                lat_e7: 4,
                lon_e7: 5,
                has_position: true,
                edge: 6,
                way_id: 7,
                offset_m: 8.5,
                speed_mps: 9.5,
                heading_deg: 10.5,
                odometer_m: 11.5,
                match_status: 1,
                moving: true,
                online: false,
                off_route: true,
                next_stop: Some(3),
                stops: vec![eta, eta],
            }),
            Response::Stop(WireStopView {
                stop: 3,
                vehicle: 1,
                status: StopStatusCode::Failed,
                late: false,
                stops_before: 0,
                eta_ms: 5,
                remaining_m: 0.0,
                lat_e7: 6,
                lon_e7: 7,
                window_start_ms: 8,
                window_end_ms: 9,
                service_s: 60.0,
                vehicle_pos: Some((1, 2, 3)),
                closed_ms: 10,
                customer_ref: "c".into(),
                outcome_text: "nobody home".into(),
            }),
            Response::Vehicles {
                truncated: true,
                found: vec![WireFound {
                    vehicle: 1,
                    lat_e7: 2,
                    lon_e7: 3,
                    time_ms: 4,
                    distance_m: 5.0,
                    speed_mps: 6.0,
                }],
            },
            Response::Ok,
            Response::TrackingToken {
                token: "t0k".into(),
                expires_ms: 77,
            },
            Response::Subscribed { next_id: 5 },
            Response::Events(vec![WireEvent {
                id: 1,
                vehicle: 2,
                seq: 3,
                stop: None,
                time_ms: 4,
                kind: 2,
                lat_e7: 5,
                lon_e7: 6,
                value: 7.0,
                reference: 8.0,
            }]),
            Response::Lost { count: 12 },
            Response::Stats(vec![("pings_accepted".into(), 5)]),
            Response::History {
                truncated: true,
                points: vec![
                    WirePathPoint {
                        time_ms: 1_767_225_600_000,
                        lat_e7: 437_000_000,
                        lon_e7: 74_000_000,
                        edge: 12,
                        flags: PATH_BREAK,
                    },
                    WirePathPoint {
                        time_ms: 1_767_225_601_500,
                        lat_e7: 437_000_100,
                        lon_e7: 74_000_050,
                        edge: 12,
                        flags: 0,
                    },
                ],
            },
            Response::error(ErrorCode::Forbidden, "not your fleet"),
        ]
    }

    #[test]
    fn every_message_round_trips() {
        for req in all_requests() {
            let mut buf = Vec::new();
            req.encode(&mut buf);
            let (h, payload, _) = split_frame(&buf, 1 << 20).unwrap().unwrap();
            assert_eq!(Request::decode(h.kind, payload).unwrap(), req);
        }
        for resp in all_responses() {
            let mut buf = Vec::new();
            resp.encode(&mut buf);
            let (h, payload, _) = split_frame(&buf, 1 << 20).unwrap().unwrap();
            assert_eq!(Response::decode(h.kind, payload).unwrap(), resp);
        }
        let hello = Hello {
            version: 1,
            token: "secret".into(),
        };
        let mut buf = Vec::new();
        hello.encode(&mut buf);
        assert_eq!(Hello::decode(&buf[8..]).unwrap(), hello);
        let welcome = Welcome {
            version: 1,
            role: Role::Dispatcher,
            max_frame: 1 << 20,
            max_batch: 32_000,
            datagram_batch: 36,
            clock_ms: 123,
            fleet: "acme".into(),
        };
        let mut buf = Vec::new();
        welcome.encode(&mut buf);
        assert_eq!(Welcome::decode(&buf[8..]).unwrap(), welcome);
        let ack = Ack {
            batch_id: 9,
            accepted: 10,
            rejected: 1,
        };
        let mut buf = Vec::new();
        ack.encode(&mut buf);
        assert_eq!(Ack::decode(&buf[8..]).unwrap(), ack);
    }

    #[test]
    fn truncated_extended_and_random_payloads_are_errors_not_panics() {
        let mut frames = Vec::new();
        for req in all_requests() {
            let mut buf = Vec::new();
            req.encode(&mut buf);
            frames.push((true, buf));
        }
        for resp in all_responses() {
            let mut buf = Vec::new();
            resp.encode(&mut buf);
            frames.push((false, buf));
        }
        let decode = |is_req: bool, kind: u16, p: &[u8]| {
            if is_req {
                Request::decode(kind, p).map(|_| ())
            } else {
                Response::decode(kind, p).map(|_| ())
            }
        };
        let mut rng = lastmile_roadgraph::rng::Rng::seed(11);
        for (is_req, buf) in &frames {
            let kind = u16::from_le_bytes([buf[4], buf[5]]);
            let payload = &buf[8..];
            for cut in 0..payload.len() {
                assert!(decode(*is_req, kind, &payload[..cut]).is_err());
            }
            let mut longer = payload.to_vec();
            longer.push(0);
            assert!(decode(*is_req, kind, &longer).is_err());
            for _ in 0..200 {
                let mut damaged = payload.to_vec();
                let n = damaged.len().max(1);
                for _ in 0..3 {
                    let i = rng.below(n as u64) as usize;
                    if i < damaged.len() {
                        damaged[i] = rng.below(256) as u8;
                    }
                }
                let _ = decode(*is_req, kind, &damaged);
            }
        }
        assert_eq!(
            Request::decode(FrameType::Ok as u16, &[]),
            Err(DecodeError::UnknownType(FrameType::Ok as u16))
        );
    }
}
