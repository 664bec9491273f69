//! The byte layouts of the records inside requests and replies (a planned
//! stop, a proof of delivery, a stop's ETA, a vehicle found, a path point,
//! an event), per protocol version: version 1 names vehicles and stops by
//! `u64`, version 2 by `str` and carries more per record (PROTOCOL.md).

use super::codec::{DecodeError, Reader, Writer};
use super::{
    ALLOCATED_ID, EtaStateCode, MAX_STR_LEN, NO_TIME, PATH_BREAK, PATH_INTERPOLATED,
    StopStatusCode, Version, WireEta, WireEvent, WireFound, WirePathPoint, WireProof, WireStop,
    WireStopEta,
};

/// The number a version-1 message carries for a name: the number it
/// spells, or the engine id of `#N`. A name that is neither cannot be sent
/// in version 1 (the server never gives one to a version-1 client): it is
/// sent as `u64::MAX`, which names nothing.
pub fn v1_number(name: &str) -> u64 {
    name.strip_prefix('#')
        .unwrap_or(name)
        .parse()
        .unwrap_or(u64::MAX)
}

/// The name a version-1 number stands for: its decimal string, or `#N`
/// from 2^62 on (the engine's own ids, which version 1 shows for names
/// that are not numbers).
pub fn v1_name(n: u64) -> String {
    if n >= ALLOCATED_ID {
        format!("#{n}")
    } else {
        n.to_string()
    }
}

pub(super) fn put_id(w: &mut Writer<'_>, v: Version, name: &str) {
    match v {
        Version::V1 => {
            w.u64(v1_number(name));
        }
        Version::V2 | Version::V3 | Version::V4 => {
            w.str(name);
        }
    }
}

pub(super) fn get_id(
    r: &mut Reader<'_>,
    v: Version,
    what: &'static str,
) -> Result<String, DecodeError> {
    Ok(match v {
        Version::V1 => v1_name(r.u64()?),
        Version::V2 | Version::V3 | Version::V4 => r.str(what, MAX_STR_LEN)?.to_string(),
    })
}

/// Smallest encoding of an id, for bounding list counts.
pub(super) fn id_len(v: Version) -> usize {
    match v {
        Version::V1 => 8,
        Version::V2 | Version::V3 | Version::V4 => 2,
    }
}

pub(super) fn flag(v: u8, what: &'static str) -> Result<bool, DecodeError> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::BadValue(what)),
    }
}

impl WireStop {
    pub(super) fn encode(&self, v: Version, w: &mut Writer<'_>) {
        put_id(w, v, &self.id);
        w.i32(self.lat_e7).i32(self.lon_e7);
        w.i64(self.window_start_ms).i64(self.window_end_ms);
        w.f32(self.service_s).u32(0).str(&self.customer_ref);
    }

    pub(super) fn decode(v: Version, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            id: get_id(r, v, "stop id")?,
            lat_e7: r.i32()?,
            lon_e7: r.i32()?,
            window_start_ms: r.i64()?,
            window_end_ms: r.i64()?,
            service_s: r.f32()?,
            customer_ref: {
                r.u32()?;
                r.str("customer_ref", MAX_STR_LEN)?.to_string()
            },
        })
    }

    /// Bytes of the smallest encoding.
    pub(super) fn min_len(v: Version) -> usize {
        id_len(v) + 34
    }
}

impl WireProof {
    pub(super) fn encode(&self, w: &mut Writer<'_>) {
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

    pub(super) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
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

impl WireEta {
    /// Version 1 has the expected time only.
    pub fn v1(eta_ms: i64) -> Self {
        Self {
            state: if eta_ms == NO_TIME {
                EtaStateCode::Unknown
            } else {
                EtaStateCode::Known
            },
            eta_ms,
            p10_ms: NO_TIME,
            p90_ms: NO_TIME,
        }
    }
}

impl WireStopEta {
    pub(super) fn encode(&self, v: Version, w: &mut Writer<'_>) {
        put_id(w, v, &self.stop);
        w.i64(self.eta.eta_ms);
        if v >= Version::V2 {
            w.i64(self.eta.p10_ms).i64(self.eta.p90_ms);
        }
        w.i64(self.window_end_ms);
        w.f32(self.remaining_m).u32(self.stops_before);
        w.u8(self.status as u8).u8(self.late as u8);
        match v {
            Version::V1 => w.u16(0),
            Version::V2 => w.u8(self.eta.state as u8).u8(0),
            Version::V3 | Version::V4 => w.u8(self.eta.state as u8).u8(self.at_risk as u8),
        };
    }

    pub(super) fn decode(v: Version, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let stop = get_id(r, v, "stop id")?;
        let eta_ms = r.i64()?;
        let mut eta = WireEta::v1(eta_ms);
        if v >= Version::V2 {
            (eta.p10_ms, eta.p90_ms) = (r.i64()?, r.i64()?);
        }
        let (window_end_ms, remaining_m, stops_before) = (r.i64()?, r.f32()?, r.u32()?);
        let status = StopStatusCode::from_u8(r.u8()?)?;
        let late = flag(r.u8()?, "late flag")?;
        let mut at_risk = false;
        match v {
            Version::V1 => {
                r.u16()?;
            }
            Version::V2 => {
                eta.state = EtaStateCode::from_u8(r.u8()?)?;
                r.u8()?;
            }
            Version::V3 | Version::V4 => {
                eta.state = EtaStateCode::from_u8(r.u8()?)?;
                at_risk = flag(r.u8()?, "at-risk flag")?;
            }
        }
        Ok(Self {
            stop,
            eta,
            window_end_ms,
            remaining_m,
            stops_before,
            status,
            late,
            at_risk,
        })
    }

    pub(super) fn min_len(v: Version) -> usize {
        match v {
            Version::V1 => 36,
            Version::V2 | Version::V3 | Version::V4 => 2 + 44,
        }
    }
}

impl WireFound {
    pub(super) fn encode(&self, v: Version, w: &mut Writer<'_>) {
        put_id(w, v, &self.vehicle);
        w.i32(self.lat_e7).i32(self.lon_e7).i64(self.time_ms);
        w.f32(self.distance_m).f32(self.speed_mps);
    }

    pub(super) fn decode(v: Version, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            vehicle: get_id(r, v, "vehicle id")?,
            lat_e7: r.i32()?,
            lon_e7: r.i32()?,
            time_ms: r.i64()?,
            distance_m: r.f32()?,
            speed_mps: r.f32()?,
        })
    }

    pub(super) fn min_len(v: Version) -> usize {
        id_len(v) + 24
    }
}

pub(super) const PATH_POINT_LEN: usize = 24;

pub(super) fn encode_point(p: &WirePathPoint, w: &mut Writer<'_>) {
    w.i64(p.time_ms).i32(p.lat_e7).i32(p.lon_e7);
    w.u32(p.edge).u32(p.flags);
}

pub(super) fn decode_point(r: &mut Reader<'_>) -> Result<WirePathPoint, DecodeError> {
    {
        let p = WirePathPoint {
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

impl WireEvent {
    pub(super) fn encode(&self, v: Version, w: &mut Writer<'_>) {
        w.u64(self.id);
        match v {
            Version::V1 => {
                w.u64(v1_number(&self.vehicle)).u64(self.seq);
                w.u64(self.stop.as_deref().map_or(0, v1_number));
                w.i64(self.time_ms);
                w.u8(self.kind).u8(self.stop.is_some() as u8).u16(0);
            }
            Version::V2 | Version::V3 | Version::V4 => {
                w.str(&self.vehicle).u64(self.seq);
                w.str(self.stop.as_deref().unwrap_or(""));
                w.str(self.zone.as_deref().unwrap_or(""));
                w.i64(self.time_ms).u8(self.kind).u8(0).u16(0);
            }
        }
        w.i32(self.lat_e7)
            .i32(self.lon_e7)
            .f64(self.value)
            .f64(self.reference);
        if v == Version::V1 {
            w.u32(0);
        }
        if v >= Version::V3 {
            w.i64(self.eta_p10_ms).i64(self.eta_p90_ms);
        }
    }

    pub(super) fn decode(v: Version, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = r.u64()?;
        let (vehicle, seq, stop, zone, time_ms, kind) = match v {
            Version::V1 => {
                let (vehicle, seq, stop, time_ms) = (r.u64()?, r.u64()?, r.u64()?, r.i64()?);
                let kind = r.u8()?;
                let has_stop = flag(r.u8()?, "event stop flag")?;
                r.u16()?;
                let stop = has_stop.then(|| v1_name(stop));
                (v1_name(vehicle), seq, stop, None, time_ms, kind)
            }
            Version::V2 | Version::V3 | Version::V4 => {
                let vehicle = r.str("vehicle id", MAX_STR_LEN)?.to_string();
                let seq = r.u64()?;
                let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
                let stop = some(r.str("stop id", MAX_STR_LEN)?);
                let zone = some(r.str("zone id", MAX_STR_LEN)?);
                let (time_ms, kind) = (r.i64()?, r.u8()?);
                r.u8()?;
                r.u16()?;
                (vehicle, seq, stop, zone, time_ms, kind)
            }
        };
        let mut e = Self {
            id,
            vehicle,
            seq,
            stop,
            zone,
            time_ms,
            kind,
            lat_e7: r.i32()?,
            lon_e7: r.i32()?,
            value: r.f64()?,
            reference: r.f64()?,
            eta_p10_ms: NO_TIME,
            eta_p90_ms: NO_TIME,
        };
        if v == Version::V1 {
            r.u32()?;
        }
        if v >= Version::V3 {
            (e.eta_p10_ms, e.eta_p90_ms) = (r.i64()?, r.i64()?);
        }
        Ok(e)
    }

    pub(super) fn min_len(v: Version) -> usize {
        match v {
            Version::V1 => 72,
            Version::V2 => 8 + 2 + 8 + 2 + 2 + 12 + 24,
            Version::V3 | Version::V4 => 8 + 2 + 8 + 2 + 2 + 12 + 24 + 16,
        }
    }
}
