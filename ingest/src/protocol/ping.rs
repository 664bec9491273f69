//! The ping record (32 bytes, fixed layout) and the PINGS batch around it.
//! A batch is decoded in place: [`PingBatch`] borrows the received bytes
//! and yields records one by one, so a 1 MiB frame of 32k pings is never
//! copied or collected before the engine takes it.

use lastmile_engine::Ping;
use lastmile_engine::fleet::VehicleId;
use lastmile_roadgraph::LatLon;

use super::codec::{DecodeError, Reader, Writer};

/// Bytes per ping record.
pub const PING_RECORD_LEN: usize = 32;
/// Bytes of the PINGS payload before the records.
pub const PINGS_HEADER_LEN: usize = 16;
/// An optional 16-bit field is absent.
pub const ABSENT: u16 = u16::MAX;

/// One ping as it travels. Optional fields hold [`ABSENT`] when unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PingRecord {
    pub vehicle: u64,
    /// Milliseconds since the Unix epoch (event time).
    pub time_ms: i64,
    /// Degrees × 10⁷.
    pub lat_e7: i32,
    pub lon_e7: i32,
    /// Centimetres per second.
    pub speed_cms: u16,
    /// Centidegrees clockwise from north, 0..=35999.
    pub heading_cdeg: u16,
    /// Horizontal accuracy in decimetres.
    pub accuracy_dm: u16,
    /// Reserved, must be 0.
    pub flags: u16,
}

/// Why one record was refused (the rest of its batch is unaffected).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    #[error("latitude or longitude out of range")]
    BadPosition,
    #[error("time not positive")]
    BadTime,
    #[error("heading above 359.99°")]
    BadHeading,
    #[error("reserved flags set")]
    ReservedFlags,
}

impl PingRecord {
    pub fn decode(b: &[u8; PING_RECORD_LEN]) -> Self {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Self {
            vehicle: u64::from_le_bytes(b[0..8].try_into().unwrap_or_default()),
            time_ms: i64::from_le_bytes(b[8..16].try_into().unwrap_or_default()),
            lat_e7: i32::from_le_bytes(b[16..20].try_into().unwrap_or_default()),
            lon_e7: i32::from_le_bytes(b[20..24].try_into().unwrap_or_default()),
            speed_cms: u16_at(24),
            heading_cdeg: u16_at(26),
            accuracy_dm: u16_at(28),
            flags: u16_at(30),
        }
    }

    pub fn encode(&self, w: &mut Writer<'_>) {
        w.u64(self.vehicle)
            .i64(self.time_ms)
            .i32(self.lat_e7)
            .i32(self.lon_e7)
            .u16(self.speed_cms)
            .u16(self.heading_cdeg)
            .u16(self.accuracy_dm)
            .u16(self.flags);
    }

    /// The wire form of an engine ping (rounded to the wire's units; an
    /// optional value that does not fit is sent as absent).
    pub fn from_ping(vehicle: VehicleId, p: &Ping) -> Self {
        let opt = |v: Option<f32>, scale: f32| -> u16 {
            v.map(|x| (x * scale).round())
                .filter(|x| x.is_finite() && *x >= 0.0 && *x < ABSENT as f32)
                .map_or(ABSENT, |x| x as u16)
        };
        Self {
            vehicle,
            time_ms: (p.time * 1000.0).round() as i64,
            lat_e7: (p.pos.lat * 1e7).round() as i32,
            lon_e7: (p.pos.lon * 1e7).round() as i32,
            speed_cms: opt(p.speed, 100.0),
            heading_cdeg: match opt(p.heading.map(|h| h.rem_euclid(360.0)), 100.0) {
                ABSENT => ABSENT,
                h => h % 36_000,
            },
            accuracy_dm: opt(p.accuracy, 10.0),
            flags: 0,
        }
    }

    /// The engine's ping, or why the record is unusable.
    pub fn to_ping(&self) -> Result<(VehicleId, Ping), PingError> {
        if self.flags != 0 {
            return Err(PingError::ReservedFlags);
        }
        if !(-900_000_000..=900_000_000).contains(&self.lat_e7)
            || !(-1_800_000_000..=1_800_000_000).contains(&self.lon_e7)
        {
            return Err(PingError::BadPosition);
        }
        if self.time_ms <= 0 {
            return Err(PingError::BadTime);
        }
        if self.heading_cdeg != ABSENT && self.heading_cdeg >= 36_000 {
            return Err(PingError::BadHeading);
        }
        let opt = |v: u16, scale: f32| (v != ABSENT).then(|| f32::from(v) / scale);
        let mut ping = Ping::new(
            self.time_ms as f64 / 1000.0,
            LatLon::new(self.lat_e7 as f64 * 1e-7, self.lon_e7 as f64 * 1e-7),
        );
        ping.speed = opt(self.speed_cms, 100.0);
        ping.heading = opt(self.heading_cdeg, 100.0);
        ping.accuracy = opt(self.accuracy_dm, 10.0);
        Ok((self.vehicle, ping))
    }
}

/// A PINGS payload, borrowed from the receive buffer.
#[derive(Clone, Copy, Debug)]
pub struct PingBatch<'a> {
    /// Chosen by the sender, echoed in the ACK (ignored on datagrams).
    pub batch_id: u64,
    records: &'a [u8],
}

impl<'a> PingBatch<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let batch_id = r.u64()?;
        let count = r.u32()? as usize;
        if r.u32()? != 0 {
            return Err(DecodeError::BadValue("PINGS reserved field"));
        }
        let records = r.bytes(count.saturating_mul(PING_RECORD_LEN).min(r.remaining() + 1))?;
        r.finish()?;
        Ok(Self { batch_id, records })
    }

    pub fn len(&self) -> usize {
        self.records.len() / PING_RECORD_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = PingRecord> + 'a {
        self.records
            .chunks_exact(PING_RECORD_LEN)
            .map(|c| PingRecord::decode(c.try_into().unwrap_or(&[0; PING_RECORD_LEN])))
    }

    /// Writes a PINGS payload.
    pub fn encode(batch_id: u64, pings: &[PingRecord], w: &mut Writer<'_>) {
        w.u64(batch_id).count(pings.len()).u32(0);
        for p in pings {
            p.encode(w);
        }
    }

    /// Largest batch that fits a frame (or datagram) of `max_payload` bytes.
    pub fn capacity(max_payload: usize) -> usize {
        max_payload.saturating_sub(PINGS_HEADER_LEN) / PING_RECORD_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{FrameType, split_frame, write_frame};

    fn sample(i: u64) -> PingRecord {
        PingRecord {
            vehicle: i * 7919,
            time_ms: 1_767_225_600_000 + i as i64 * 1000,
            lat_e7: 437_300_000 + i as i32,
            lon_e7: 74_200_000 - i as i32,
            speed_cms: if i.is_multiple_of(3) { ABSENT } else { 1234 },
            heading_cdeg: (i * 100 % 36_000) as u16,
            accuracy_dm: 50,
            flags: 0,
        }
    }

    #[test]
    fn batch_round_trip_in_place() {
        let pings: Vec<PingRecord> = (0..100).map(sample).collect();
        let mut buf = Vec::new();
        write_frame(&mut buf, FrameType::Pings, |w| {
            PingBatch::encode(42, &pings, w)
        });
        assert_eq!(buf.len(), 8 + PINGS_HEADER_LEN + 100 * PING_RECORD_LEN);
        let (_, payload, _) = split_frame(&buf, 1 << 20).unwrap().unwrap();
        let batch = PingBatch::decode(payload).unwrap();
        assert_eq!(batch.batch_id, 42);
        assert_eq!(batch.iter().collect::<Vec<_>>(), pings);
    }

    #[test]
    fn a_count_that_disagrees_with_the_length_is_malformed() {
        let pings: Vec<PingRecord> = (0..3).map(sample).collect();
        let mut buf = Vec::new();
        write_frame(&mut buf, FrameType::Pings, |w| {
            PingBatch::encode(1, &pings, w)
        });
        let payload = buf[8..].to_vec();
        for cut in 0..payload.len() {
            assert!(PingBatch::decode(&payload[..cut]).is_err(), "cut at {cut}");
        }
        let mut extra = payload.clone();
        extra.push(0);
        assert!(PingBatch::decode(&extra).is_err());
        let mut forged = payload.clone();
        forged[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(PingBatch::decode(&forged).is_err());
    }

    #[test]
    fn engine_ping_round_trip_and_validation() {
        let mut p = Ping::new(1_767_225_600.123, LatLon::new(43.7311234, 7.4198765));
        p.speed = Some(12.34);
        p.heading = Some(-90.0);
        p.accuracy = Some(4.5);
        let rec = PingRecord::from_ping(9, &p);
        let (v, back) = rec.to_ping().unwrap();
        assert_eq!(v, 9);
        assert!((back.time - p.time).abs() < 1e-3);
        assert!((back.pos.lat - p.pos.lat).abs() < 1e-7);
        assert!((back.pos.lon - p.pos.lon).abs() < 1e-7);
        assert_eq!(back.speed, Some(12.34));
        assert_eq!(back.heading, Some(270.0));
        assert_eq!(back.accuracy, Some(4.5));

        let none = PingRecord::from_ping(1, &Ping::new(10.0, LatLon::new(0.5, 0.5)));
        let (_, q) = none.to_ping().unwrap();
        assert_eq!((q.speed, q.heading, q.accuracy), (None, None, None));
        // NaN and absurd optional values travel as absent, not as garbage.
        let mut nan = Ping::new(10.0, LatLon::new(0.5, 0.5));
        nan.speed = Some(f32::NAN);
        nan.accuracy = Some(1e9);
        let (_, q) = PingRecord::from_ping(1, &nan).to_ping().unwrap();
        assert_eq!((q.speed, q.accuracy), (None, None));

        let bad = |f: fn(&mut PingRecord)| {
            let mut r = sample(1);
            f(&mut r);
            r.to_ping().unwrap_err()
        };
        assert_eq!(bad(|r| r.lat_e7 = 900_000_001), PingError::BadPosition);
        assert_eq!(bad(|r| r.lon_e7 = i32::MIN), PingError::BadPosition);
        assert_eq!(bad(|r| r.time_ms = 0), PingError::BadTime);
        assert_eq!(bad(|r| r.heading_cdeg = 36_000), PingError::BadHeading);
        assert_eq!(bad(|r| r.flags = 1), PingError::ReservedFlags);
    }

    /// The worked example of PROTOCOL.md, byte for byte.
    #[test]
    fn protocol_md_example_bytes() {
        let hex = |s: &str| -> Vec<u8> {
            s.split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).unwrap())
                .collect()
        };
        let mut hello = Vec::new();
        crate::protocol::Hello {
            version: 1,
            token: "t0ken-of-16-chars".into(),
        }
        .encode(&mut hello);
        assert_eq!(
            hello,
            hex(
                "17 00 00 00 01 00 00 00 01 00 00 00 11 00 74 30 6b 65 6e 2d 6f 66 2d 31 36 2d 63 68 61 72 73"
            )
        );
        let rec = PingRecord {
            vehicle: 7,
            time_ms: 1_767_225_600_000,
            lat_e7: 437_300_000,
            lon_e7: 74_200_000,
            speed_cms: 1250,
            heading_cdeg: 9000,
            accuracy_dm: ABSENT,
            flags: 0,
        };
        let mut pings = Vec::new();
        write_frame(&mut pings, FrameType::Pings, |w| {
            PingBatch::encode(1, &[rec], w)
        });
        assert_eq!(
            pings,
            hex(
                "30 00 00 00 10 00 00 00 01 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 \
            07 00 00 00 00 00 00 00 00 a8 da 76 9b 01 00 00 20 ab 10 1a c0 33 6c 04 e2 04 28 23 ff ff 00 00"
            )
        );
        let mut ack = Vec::new();
        crate::protocol::Ack {
            batch_id: 1,
            accepted: 1,
            rejected: 0,
        }
        .encode(&mut ack);
        assert_eq!(
            ack,
            hex("10 00 00 00 11 00 00 00 01 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00")
        );
    }
}
