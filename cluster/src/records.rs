//! What the ping log carries: a front end's batch of one partition's
//! pings, as bytes. Little-endian, fixed width, a version byte first so a
//! layout can be told apart. Most pings come in the QUIC protocol's units
//! (whole ms, 1e-7 degrees, cm/s, 0.01 degree, dm), and a batch whose pings
//! all read back bit for bit from those units is written in them (26 bytes
//! a ping rather than 44: the replicated log's cost grows with its bytes):
//!
//! ```text
//! u8 version (2) | u32 count | i64 first time ms
//!   | count x { u64 vehicle | u32 ms after the first | i32 lat e7 | i32 lon e7
//!               | u16 speed cm/s | u16 heading 0.01° | u16 accuracy dm }   (absent: 65535)
//! ```
//!
//! Any other batch (an HTTP or OsmAnd position in finer degrees, times a
//! month apart) keeps its values whole:
//!
//! ```text
//! u8 version (1) | u32 count | count x { u64 vehicle | f64 time | f64 lat | f64 lon
//!                                        | f32 speed | f32 heading | f32 accuracy }
//! ```
//!
//! A missing speed, heading or accuracy is a NaN there. A batch that does
//! not read back (another version, cut short, a count that does not match
//! the length) is refused whole with the reason: an engine counts and skips
//! it rather than apply part of it.

use lastmile_engine::Ping;
use lastmile_engine::fleet::VehicleId;
use lastmile_roadgraph::LatLon;

const WHOLE: u8 = 1;
const HEADER: usize = 5;
const PING: usize = 8 + 3 * 8 + 3 * 4;
const UNITS: u8 = 2;
const UNITS_HEADER: usize = HEADER + 8;
const UNITS_PING: usize = 8 + 4 + 2 * 4 + 3 * 2;
/// An optional value absent, in units.
const ABSENT: u16 = u16::MAX;

/// Most pings in one batch (a front end splits longer ones): bounds what a
/// reader allocates for a batch it did not write.
pub const MAX_BATCH: usize = 16_384;

/// `pings` as one batch (at most [`MAX_BATCH`]; more is a caller's bug).
pub fn encode(pings: &[(VehicleId, Ping)]) -> Vec<u8> {
    assert!(pings.len() <= MAX_BATCH, "a batch of {}", pings.len());
    encode_in_units(pings).unwrap_or_else(|| encode_whole(pings))
}

/// A ping in the protocol's units, if it reads back from them bit for bit.
struct InUnits {
    ms: i64,
    lat: i32,
    lon: i32,
    speed: u16,
    heading: u16,
    accuracy: u16,
}

impl InUnits {
    fn of(p: &Ping) -> Option<Self> {
        let opt = |v: Option<f32>, scale: f32| -> Option<u16> {
            let Some(v) = v else { return Some(ABSENT) };
            let u = (v * scale).round();
            (u >= 0.0 && u < f32::from(ABSENT)).then_some(u as u16)
        };
        let units = Self {
            ms: finite_round(p.time * 1e3)?,
            lat: i32::try_from(finite_round(p.pos.lat * 1e7)?).ok()?,
            lon: i32::try_from(finite_round(p.pos.lon * 1e7)?).ok()?,
            speed: opt(p.speed, 100.0)?,
            heading: opt(p.heading, 100.0)?,
            accuracy: opt(p.accuracy, 10.0)?,
        };
        let back = units.ping(units.ms);
        let bits = |p: &Ping| {
            let f = |v: Option<f32>| v.map(f32::to_bits);
            (
                p.time.to_bits(),
                p.pos.lat.to_bits(),
                p.pos.lon.to_bits(),
                f(p.speed),
                f(p.heading),
                f(p.accuracy),
            )
        };
        (bits(&back) == bits(p)).then_some(units)
    }

    /// The ping, as the QUIC front end makes it from these units.
    fn ping(&self, ms: i64) -> Ping {
        let opt = |v: u16, scale: f32| (v != ABSENT).then(|| f32::from(v) / scale);
        let mut p = Ping::new(
            ms as f64 / 1000.0,
            LatLon::new(f64::from(self.lat) * 1e-7, f64::from(self.lon) * 1e-7),
        );
        p.speed = opt(self.speed, 100.0);
        p.heading = opt(self.heading, 100.0);
        p.accuracy = opt(self.accuracy, 10.0);
        p
    }
}

fn finite_round(v: f64) -> Option<i64> {
    (v.is_finite() && v.abs() < 9.0e15).then(|| v.round() as i64)
}

/// The batch in units, unless a ping does not read back from them.
fn encode_in_units(pings: &[(VehicleId, Ping)]) -> Option<Vec<u8>> {
    let units = pings
        .iter()
        .map(|(_, p)| InUnits::of(p))
        .collect::<Option<Vec<_>>>()?;
    let first = units.iter().map(|u| u.ms).min().unwrap_or(0);
    let mut out = Vec::with_capacity(UNITS_HEADER + UNITS_PING * pings.len());
    out.push(UNITS);
    out.extend_from_slice(&(pings.len() as u32).to_le_bytes());
    out.extend_from_slice(&first.to_le_bytes());
    for ((vehicle, _), u) in pings.iter().zip(&units) {
        let after = u32::try_from(u.ms - first).ok()?;
        out.extend_from_slice(&vehicle.to_le_bytes());
        out.extend_from_slice(&after.to_le_bytes());
        out.extend_from_slice(&u.lat.to_le_bytes());
        out.extend_from_slice(&u.lon.to_le_bytes());
        out.extend_from_slice(&u.speed.to_le_bytes());
        out.extend_from_slice(&u.heading.to_le_bytes());
        out.extend_from_slice(&u.accuracy.to_le_bytes());
    }
    Some(out)
}

fn encode_whole(pings: &[(VehicleId, Ping)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + PING * pings.len());
    out.push(WHOLE);
    out.extend_from_slice(&(pings.len() as u32).to_le_bytes());
    let opt = |v: Option<f32>| v.unwrap_or(f32::NAN).to_le_bytes();
    for (vehicle, p) in pings {
        out.extend_from_slice(&vehicle.to_le_bytes());
        out.extend_from_slice(&p.time.to_le_bytes());
        out.extend_from_slice(&p.pos.lat.to_le_bytes());
        out.extend_from_slice(&p.pos.lon.to_le_bytes());
        out.extend_from_slice(&opt(p.speed));
        out.extend_from_slice(&opt(p.heading));
        out.extend_from_slice(&opt(p.accuracy));
    }
    out
}

/// Why a stored batch was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadBatch(pub String);

impl std::fmt::Display for BadBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unreadable ping batch: {}", self.0)
    }
}

impl std::error::Error for BadBatch {}

/// The pings of a batch, appended to `out` (nothing appended on an error).
pub fn decode(bytes: &[u8], out: &mut Vec<(VehicleId, Ping)>) -> Result<usize, BadBatch> {
    let bad = |why: String| Err(BadBatch(why));
    let Some((&version, rest)) = bytes.split_first() else {
        return bad("empty".into());
    };
    if version != WHOLE && version != UNITS {
        return bad(format!(
            "version {version}, this build reads {WHOLE} and {UNITS}"
        ));
    }
    let Some((count, rest)) = rest.split_first_chunk::<4>() else {
        return bad("cut short".into());
    };
    let count = u32::from_le_bytes(*count) as usize;
    if version == UNITS {
        let Some((first, rest)) = rest.split_first_chunk::<8>() else {
            return bad("cut short".into());
        };
        if count > MAX_BATCH || rest.len() != count * UNITS_PING {
            return bad(format!("{count} pings in {} bytes", rest.len()));
        }
        let first = i64::from_le_bytes(*first);
        out.reserve(count);
        for p in rest.chunks_exact(UNITS_PING) {
            let u32_at = |i: usize| u32::from_le_bytes(p[i..i + 4].try_into().expect("4 bytes"));
            let u16_at = |i: usize| u16::from_le_bytes(p[i..i + 2].try_into().expect("2 bytes"));
            let units = InUnits {
                ms: 0,
                lat: u32_at(12) as i32,
                lon: u32_at(16) as i32,
                speed: u16_at(20),
                heading: u16_at(22),
                accuracy: u16_at(24),
            };
            let vehicle = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
            let ms = first.saturating_add(i64::from(u32_at(8)));
            out.push((vehicle, units.ping(ms)));
        }
        return Ok(count);
    }
    if count > MAX_BATCH || rest.len() != count * PING {
        return bad(format!("{count} pings in {} bytes", rest.len()));
    }
    out.reserve(count);
    for p in rest.chunks_exact(PING) {
        let u64_at = |i: usize| u64::from_le_bytes(p[i..i + 8].try_into().expect("8 bytes"));
        let f64_at = |i: usize| f64::from_bits(u64_at(i));
        let f32_at = |i: usize| {
            let v = f32::from_le_bytes(p[i..i + 4].try_into().expect("4 bytes"));
            (!v.is_nan()).then_some(v)
        };
        let mut ping = Ping::new(f64_at(8), LatLon::new(f64_at(16), f64_at(24)));
        ping.speed = f32_at(32);
        ping.heading = f32_at(36);
        ping.accuracy = f32_at(40);
        out.push((u64_at(0), ping));
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(i: u32) -> (VehicleId, Ping) {
        let mut p = Ping::new(
            1.7e9 + f64::from(i),
            LatLon::new(43.7 + 1e-5 * f64::from(i), 7.42),
        );
        p.speed = i.is_multiple_of(2).then_some(12.5);
        p.heading = i.is_multiple_of(3).then_some(270.0);
        p.accuracy = Some(4.0);
        (u64::from(i) << 40 | 7, p)
    }

    #[test]
    fn a_batch_reads_back_exactly() {
        let pings: Vec<_> = (0..50).map(ping).collect();
        let mut back = Vec::new();
        assert_eq!(decode(&encode(&pings), &mut back), Ok(50));
        assert_eq!(back.len(), 50);
        for ((a, p), (b, q)) in pings.iter().zip(&back) {
            assert_eq!(a, b);
            assert_eq!(p.time.to_bits(), q.time.to_bits());
            assert_eq!((p.pos.lat, p.pos.lon), (q.pos.lat, q.pos.lon));
            assert_eq!(
                (p.speed, p.heading, p.accuracy),
                (q.speed, q.heading, q.accuracy)
            );
        }
        assert_eq!(decode(&encode(&[]), &mut back), Ok(0));
    }

    /// A ping as the QUIC front end makes it from the wire's units.
    fn wire_ping(i: u32) -> (VehicleId, Ping) {
        let mut p = Ping::new(
            (1_767_225_600_123 + 997 * i64::from(i)) as f64 / 1000.0,
            LatLon::new(
                f64::from(437_311_234 + 13 * i as i32) * 1e-7,
                f64::from(-74_198_765 - 7 * i as i32) * 1e-7,
            ),
        );
        p.speed = i
            .is_multiple_of(2)
            .then(|| f32::from(1250 + i as u16) / 100.0);
        p.heading = i
            .is_multiple_of(3)
            .then(|| f32::from(27_000 + i as u16) / 100.0);
        p.accuracy = Some(f32::from(40 + i as u16) / 10.0);
        (u64::from(i) << 40 | 7, p)
    }

    fn assert_same(pings: &[(VehicleId, Ping)], back: &[(VehicleId, Ping)]) {
        assert_eq!(pings.len(), back.len());
        for ((a, p), (b, q)) in pings.iter().zip(back) {
            assert_eq!(a, b);
            assert_eq!(p.time.to_bits(), q.time.to_bits());
            assert_eq!(p.pos.lat.to_bits(), q.pos.lat.to_bits());
            assert_eq!(p.pos.lon.to_bits(), q.pos.lon.to_bits());
            let bits = |v: Option<f32>| v.map(f32::to_bits);
            assert_eq!(bits(p.speed), bits(q.speed));
            assert_eq!(bits(p.heading), bits(q.heading));
            assert_eq!(bits(p.accuracy), bits(q.accuracy));
        }
    }

    #[test]
    fn pings_in_the_wires_units_are_written_in_them_exactly() {
        let pings: Vec<_> = (0..50).map(wire_ping).collect();
        let bytes = encode(&pings);
        assert_eq!(bytes[0], UNITS);
        assert_eq!(bytes.len(), UNITS_HEADER + 50 * UNITS_PING);
        let mut back = Vec::new();
        assert_eq!(decode(&bytes, &mut back), Ok(50));
        assert_same(&pings, &back);
        // One position finer than 1e-7 degrees: the batch is kept whole.
        let mut finer = pings.clone();
        finer[20].1.pos.lat += 1e-9;
        let bytes = encode(&finer);
        assert_eq!(bytes[0], WHOLE);
        back.clear();
        assert_eq!(decode(&bytes, &mut back), Ok(50));
        assert_same(&finer, &back);
        // So is a batch spanning more than 49 days of ms.
        let mut far = pings[..2].to_vec();
        far[1].1.time += 50.0 * 86_400.0;
        assert_eq!(encode(&far)[0], WHOLE);
    }

    #[test]
    fn a_damaged_batch_is_refused_whole() {
        let bytes = encode(&(0..3).map(ping).collect::<Vec<_>>());
        let mut out = Vec::new();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], &mut out).is_err(), "cut at {cut}");
        }
        let units = encode(&(0..3).map(wire_ping).collect::<Vec<_>>());
        assert_eq!(units[0], UNITS);
        for cut in 0..units.len() {
            assert!(decode(&units[..cut], &mut out).is_err(), "cut at {cut}");
        }
        let mut other = bytes.clone();
        other[0] = 9;
        assert!(
            decode(&other, &mut out)
                .unwrap_err()
                .0
                .contains("version 9")
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer, &mut out).is_err());
        let mut huge = bytes;
        huge[1..5].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&huge, &mut out).is_err());
        assert!(out.is_empty());
    }
}
