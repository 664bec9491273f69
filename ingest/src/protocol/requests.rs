//! Requests' byte layouts (client → server, on request streams), per
//! protocol version: the same fields, with vehicles and stops named by
//! `u64` in version 1 and by `str` in version 2. BIND exists from version 2.

use super::codec::{DecodeError, Reader, write_frame};
use super::records::{get_id, id_len, put_id};
use super::{FrameType, MAX_LIST_LEN, MAX_STR_LEN, Request, Version, WireProof, WireStop};

/// Most aliases one BIND may set.
pub const MAX_BIND: usize = 100_000;

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
            Self::Bind { .. } => FrameType::Bind,
            Self::PutZones { .. } => FrameType::PutZones,
            Self::RemoveZones { .. } => FrameType::RemoveZones,
            Self::GetZones => FrameType::GetZones,
            Self::Upkeep { .. } => FrameType::Upkeep,
        }
    }

    /// Appends the request's frame in version `v` (a BIND in version 1,
    /// which has none, is written as in version 2 and refused by servers).
    pub fn encode(&self, v: Version, out: &mut Vec<u8>) {
        write_frame(out, self.frame_type(), |w| match self {
            Self::GetVehicle { vehicle } => put_id(w, v, vehicle),
            Self::GetHistory {
                vehicle,
                from_ms,
                to_ms,
            } => {
                put_id(w, v, vehicle);
                w.i64(*from_ms).i64(*to_ms);
            }
            Self::GetStop { stop } => put_id(w, v, stop),
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
                put_id(w, v, vehicle);
                w.i64(*time_ms).count(stops.len());
                for s in stops {
                    s.encode(v, w);
                }
            }
            Self::AddStop {
                vehicle,
                time_ms,
                index,
                stop,
            } => {
                put_id(w, v, vehicle);
                w.i64(*time_ms).u32(*index);
                stop.encode(v, w);
            }
            Self::RemoveStop {
                vehicle,
                time_ms,
                stop,
            } => {
                put_id(w, v, vehicle);
                w.i64(*time_ms);
                put_id(w, v, stop);
            }
            Self::Reorder {
                vehicle,
                time_ms,
                order,
            } => {
                put_id(w, v, vehicle);
                w.i64(*time_ms).count(order.len());
                for s in order {
                    put_id(w, v, s);
                }
            }
            Self::Complete {
                vehicle,
                time_ms,
                stop,
                proof,
            } => {
                put_id(w, v, vehicle);
                w.i64(*time_ms);
                put_id(w, v, stop);
                proof.encode(w);
            }
            Self::Fail {
                vehicle,
                time_ms,
                stop,
                reason,
            } => {
                put_id(w, v, vehicle);
                w.i64(*time_ms);
                put_id(w, v, stop);
                w.str(reason);
            }
            Self::Reassign {
                stop,
                to_vehicle,
                time_ms,
                index,
            } => {
                put_id(w, v, stop);
                put_id(w, v, to_vehicle);
                w.i64(*time_ms).u32(*index);
            }
            Self::CreateTrackingToken { stop, ttl_s } => {
                put_id(w, v, stop);
                w.u32(*ttl_s);
            }
            Self::Subscribe {
                from,
                kinds,
                vehicles,
                stops,
            } => {
                w.u64(*from);
                if v >= Version::V4 {
                    w.u64(*kinds);
                } else {
                    // Kinds from 32 on cannot be named in 32 bits.
                    w.u32(*kinds as u32);
                }
                w.count(vehicles.len());
                for id in vehicles {
                    put_id(w, v, id);
                }
                w.count(stops.len());
                for id in stops {
                    put_id(w, v, id);
                }
            }
            Self::GetStats => {}
            Self::Bind { vehicles } => {
                w.count(vehicles.len());
                for (alias, id) in vehicles {
                    w.u64(*alias).str(id);
                }
            }
            Self::PutZones { time_ms, geojson } => {
                w.i64(*time_ms).text(geojson);
            }
            Self::RemoveZones { time_ms, zones } => {
                w.i64(*time_ms).count(zones.len());
                for z in zones {
                    w.str(z);
                }
            }
            Self::GetZones => {}
            Self::Upkeep {
                vehicle,
                time_ms,
                serviced,
                odometer_m,
            } => {
                put_id(w, v, vehicle);
                w.i64(*time_ms).u8(u8::from(*serviced)).f64(*odometer_m);
            }
        });
    }

    pub fn decode(v: Version, kind: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        let t = FrameType::from_u16(kind).ok_or(DecodeError::UnknownType(kind))?;
        let mut reader = Reader::new(payload);
        let r = &mut reader;
        let ids = |r: &mut Reader<'_>, what| -> Result<Vec<String>, DecodeError> {
            let n = r.count(what, MAX_LIST_LEN, id_len(v))?;
            (0..n).map(|_| get_id(r, v, what)).collect()
        };
        let req = match t {
            FrameType::GetVehicle => Self::GetVehicle {
                vehicle: get_id(r, v, "vehicle id")?,
            },
            FrameType::GetStop => Self::GetStop {
                stop: get_id(r, v, "stop id")?,
            },
            FrameType::GetHistory => Self::GetHistory {
                vehicle: get_id(r, v, "vehicle id")?,
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
                let (vehicle, time_ms) = (get_id(r, v, "vehicle id")?, r.i64()?);
                let n = r.count("stops", MAX_LIST_LEN, WireStop::min_len(v))?;
                let stops = (0..n)
                    .map(|_| WireStop::decode(v, r))
                    .collect::<Result<_, _>>()?;
                Self::AssignRoute {
                    vehicle,
                    time_ms,
                    stops,
                }
            }
            FrameType::AddStop => Self::AddStop {
                vehicle: get_id(r, v, "vehicle id")?,
                time_ms: r.i64()?,
                index: r.u32()?,
                stop: WireStop::decode(v, r)?,
            },
            FrameType::RemoveStop => Self::RemoveStop {
                vehicle: get_id(r, v, "vehicle id")?,
                time_ms: r.i64()?,
                stop: get_id(r, v, "stop id")?,
            },
            FrameType::Reorder => Self::Reorder {
                vehicle: get_id(r, v, "vehicle id")?,
                time_ms: r.i64()?,
                order: ids(r, "order")?,
            },
            FrameType::Complete => Self::Complete {
                vehicle: get_id(r, v, "vehicle id")?,
                time_ms: r.i64()?,
                stop: get_id(r, v, "stop id")?,
                proof: WireProof::decode(r)?,
            },
            FrameType::Fail => Self::Fail {
                vehicle: get_id(r, v, "vehicle id")?,
                time_ms: r.i64()?,
                stop: get_id(r, v, "stop id")?,
                reason: r.str("reason", MAX_STR_LEN)?.to_string(),
            },
            FrameType::Reassign => Self::Reassign {
                stop: get_id(r, v, "stop id")?,
                to_vehicle: get_id(r, v, "vehicle id")?,
                time_ms: r.i64()?,
                index: r.u32()?,
            },
            FrameType::CreateTrackingToken => Self::CreateTrackingToken {
                stop: get_id(r, v, "stop id")?,
                ttl_s: r.u32()?,
            },
            FrameType::Subscribe => Self::Subscribe {
                from: r.u64()?,
                kinds: if v >= Version::V4 {
                    r.u64()?
                } else {
                    u64::from(r.u32()?)
                },
                vehicles: ids(r, "vehicles")?,
                stops: ids(r, "stops")?,
            },
            FrameType::GetStats => Self::GetStats,
            FrameType::Bind if v >= Version::V2 => {
                let n = r.count("aliases", MAX_BIND, 10)?;
                let vehicles = (0..n)
                    .map(|_| Ok((r.u64()?, r.str("vehicle id", MAX_STR_LEN)?.to_string())))
                    .collect::<Result<_, DecodeError>>()?;
                Self::Bind { vehicles }
            }
            FrameType::PutZones if v >= Version::V2 => Self::PutZones {
                time_ms: r.i64()?,
                geojson: r.text("zones", usize::MAX)?.to_string(),
            },
            FrameType::RemoveZones if v >= Version::V2 => Self::RemoveZones {
                time_ms: r.i64()?,
                zones: ids(r, "zones")?,
            },
            FrameType::GetZones if v >= Version::V2 => Self::GetZones,
            FrameType::Upkeep if v >= Version::V4 => Self::Upkeep {
                vehicle: get_id(r, v, "vehicle id")?,
                time_ms: r.i64()?,
                serviced: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::BadValue("serviced (0 or 1)")),
                },
                odometer_m: r.f64()?,
            },
            _ => return Err(DecodeError::UnknownType(kind)),
        };
        reader.finish()?;
        Ok(req)
    }
}
