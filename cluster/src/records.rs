//! What the ping log carries: a front end's batch of one partition's
//! pings, as bytes. Little-endian, fixed width, a version byte first so a
//! later layout can be told apart:
//!
//! ```text
//! u8 version (1) | u32 count | count x { u64 vehicle | f64 time | f64 lat | f64 lon
//!                                        | f32 speed | f32 heading | f32 accuracy }
//! ```
//!
//! A missing speed, heading or accuracy is a NaN. A batch that does not
//! read back (another version, cut short, a count that does not match the
//! length) is refused whole with the reason: an engine counts and skips it
//! rather than apply part of it.

use lastmile_engine::Ping;
use lastmile_engine::fleet::VehicleId;
use lastmile_roadgraph::LatLon;

const VERSION: u8 = 1;
const HEADER: usize = 5;
const PING: usize = 8 + 3 * 8 + 3 * 4;

/// Most pings in one batch (a front end splits longer ones): bounds what a
/// reader allocates for a batch it did not write.
pub const MAX_BATCH: usize = 16_384;

/// `pings` as one batch (at most [`MAX_BATCH`]; more is a caller's bug).
pub fn encode(pings: &[(VehicleId, Ping)]) -> Vec<u8> {
    assert!(pings.len() <= MAX_BATCH, "a batch of {}", pings.len());
    let mut out = Vec::with_capacity(HEADER + PING * pings.len());
    out.push(VERSION);
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
    if version != VERSION {
        return bad(format!("version {version}, this build reads {VERSION}"));
    }
    let Some((count, rest)) = rest.split_first_chunk::<4>() else {
        return bad("cut short".into());
    };
    let count = u32::from_le_bytes(*count) as usize;
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

    #[test]
    fn a_damaged_batch_is_refused_whole() {
        let bytes = encode(&(0..3).map(ping).collect::<Vec<_>>());
        let mut out = Vec::new();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], &mut out).is_err(), "cut at {cut}");
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
