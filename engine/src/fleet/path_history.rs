//! A vehicle's finalised path as it is kept: pieces ([`PathPiece`]) in a
//! compact chunk of bytes (a node's store and a cluster's history stream
//! write the same form), and pieces read back from several writers put in
//! order again. On a cluster a partition's next owner drives it again from
//! its checkpoint, so the pieces finalised between that checkpoint and the
//! previous owner's death are written twice: [`settle`] keeps one of each.

use super::{PathPiece, VehicleId};

/// Bytes of one piece in a chunk.
const PIECE_BYTES: usize = 20;
/// Bytes of a chunk's header (its start, ms).
const HEADER_BYTES: usize = 8;

/// A chunk: its start (ms, i64), then per piece: edge u32, from and to
/// metres f32, start offset from the chunk's start ms u32, duration ms u32.
/// Pieces are read back at that resolution (whole ms, f32 metres).
pub fn encode_chunk(pieces: &[PathPiece]) -> Vec<u8> {
    let start = pieces
        .first()
        .map_or(0, |p| (p.t_start * 1e3).round() as i64);
    let mut b = Vec::with_capacity(HEADER_BYTES + pieces.len() * PIECE_BYTES);
    b.extend_from_slice(&start.to_le_bytes());
    for p in pieces {
        // Both ends rounded to the millisecond on their own, so a piece
        // that starts where the previous ended still does after decoding.
        let (t0, t1) = (
            (p.t_start * 1e3).round() as i64,
            (p.t_end * 1e3).round() as i64,
        );
        let s = (t0 - start).clamp(0, i64::from(u32::MAX)) as u32;
        let d = (t1 - t0).clamp(0, i64::from(u32::MAX)) as u32;
        b.extend_from_slice(&p.edge.to_le_bytes());
        b.extend_from_slice(&(p.from_m as f32).to_le_bytes());
        b.extend_from_slice(&(p.to_m as f32).to_le_bytes());
        b.extend_from_slice(&s.to_le_bytes());
        b.extend_from_slice(&d.to_le_bytes());
    }
    b
}

/// Whether `b` has the shape of a chunk (a header and whole pieces).
pub fn is_chunk(b: &[u8]) -> bool {
    b.len() >= HEADER_BYTES && (b.len() - HEADER_BYTES).is_multiple_of(PIECE_BYTES)
}

/// The pieces of a chunk of `vehicle`'s (none from fewer bytes than a
/// header; a partial piece at the end is left out).
pub fn decode_chunk(vehicle: VehicleId, b: &[u8]) -> Vec<PathPiece> {
    if b.len() < HEADER_BYTES {
        return Vec::new();
    }
    let start = i64::from_le_bytes(b[..HEADER_BYTES].try_into().expect("8 bytes"));
    b[HEADER_BYTES..]
        .chunks_exact(PIECE_BYTES)
        .map(|c| {
            let u = |i: usize| u32::from_le_bytes(c[i..i + 4].try_into().expect("4 bytes"));
            let f = |i: usize| f64::from(f32::from_bits(u(i)));
            let t0 = start + i64::from(u(12));
            PathPiece {
                vehicle,
                edge: u(0),
                from_m: f(4),
                to_m: f(8),
                t_start: t0 as f64 / 1e3,
                t_end: (t0 + i64::from(u(16))) as f64 / 1e3,
            }
        })
        .collect()
}

fn ms(t: f64) -> i64 {
    (t * 1e3).round() as i64
}

/// Whether `p` goes on where `last` ended along the same edge, without a
/// pause (a 1 Hz drive finalises a piece per ping; one per edge driven is
/// what a path needs).
pub fn continues(last: &PathPiece, p: &PathPiece) -> bool {
    last.edge == p.edge && (p.from_m - last.to_m).abs() < 0.5 && p.t_start - last.t_end < 1.0
}

/// One vehicle's pieces as read from chunks in the order they were written
/// (each chunk in time order, chunks from any writer), put in time order
/// with every piece once: a piece written again (the same piece) or one
/// that starts before the path kept so far has ended (a second writer's
/// piece of a stretch the first had written) is left out. Then each run
/// of pieces that [`continues`] along one edge becomes one piece, so the
/// path does not depend on how its pieces were cut into chunks. Returns
/// the number of pieces left out.
pub fn settle(pieces: &mut Vec<PathPiece>) -> usize {
    // Stable: pieces of one instant (edges crossed within a millisecond)
    // keep the order they were finalised in.
    pieces.sort_by(|a, b| a.t_start.total_cmp(&b.t_start));
    let before = pieces.len();
    let mut kept: Vec<PathPiece> = Vec::with_capacity(pieces.len());
    // Where the kept pieces of the latest start time begin.
    let mut instant = 0;
    for p in pieces.drain(..) {
        if let Some(last) = kept.last() {
            // In whole ms, as chunks hold them.
            if ms(p.t_start) < ms(last.t_end) {
                continue;
            }
            if p.t_start != last.t_start {
                instant = kept.len();
            } else if kept[instant..].contains(&p) {
                continue;
            }
        }
        kept.push(p);
    }
    let dropped = before - kept.len();
    for p in kept {
        match pieces.last_mut() {
            Some(last) if continues(last, &p) => {
                last.to_m = p.to_m;
                last.t_end = p.t_end;
            }
            _ => pieces.push(p),
        }
    }
    dropped
}

/// Of one vehicle's settled pieces, those overlapping `[from, to]`, after
/// the last that ended before `from` (its predecessor, for joining), at
/// most `max` into `out`; `true` when more remain.
pub fn window(
    pieces: &[PathPiece],
    from: f64,
    to: f64,
    max: usize,
    out: &mut Vec<PathPiece>,
) -> bool {
    let first = pieces.partition_point(|p| p.t_end < from);
    let start = first.saturating_sub(1);
    for (i, p) in pieces[start..].iter().enumerate() {
        if p.t_start > to {
            break;
        }
        if out.len() == max {
            return true;
        }
        // The predecessor only when a piece of the window follows it.
        if i == 0 && first > 0 && pieces.get(first).is_none_or(|n| n.t_start > to) {
            break;
        }
        out.push(*p);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(edge: u32, from_m: f64, to_m: f64, t_start: f64, t_end: f64) -> PathPiece {
        PathPiece {
            vehicle: 7,
            edge,
            from_m,
            to_m,
            t_start,
            t_end,
        }
    }

    /// A drive as a matcher finalises it: pieces per ping, several on one
    /// edge, two edges crossed in one instant, a stand.
    fn drive() -> Vec<PathPiece> {
        vec![
            piece(1, 0.0, 40.0, 100.0, 104.0),
            piece(1, 40.0, 100.0, 104.0, 110.0),
            piece(2, 0.0, 0.0, 110.0, 110.0),
            piece(3, 0.0, 30.0, 110.0, 113.0),
            piece(3, 30.0, 30.0, 113.0, 200.0),
            piece(4, 0.0, 50.0, 260.0, 265.0),
        ]
    }

    fn round_trip(pieces: &[PathPiece]) -> Vec<PathPiece> {
        decode_chunk(7, &encode_chunk(pieces))
    }

    #[test]
    fn chunks_read_back_at_their_resolution() {
        let d = drive();
        let b = encode_chunk(&d);
        assert!(is_chunk(&b));
        assert!(!is_chunk(&b[..b.len() - 1]));
        assert_eq!(round_trip(&d), d);
        assert!(decode_chunk(7, &[1, 2]).is_empty());
    }

    #[test]
    fn a_stretch_written_twice_reads_once_however_it_was_cut() {
        let d = drive();
        let mut once = round_trip(&d);
        assert_eq!(settle(&mut once), 0);
        // The first writer wrote the first four pieces in two chunks and
        // died; the next wrote pieces 2.. again (from its checkpoint), cut
        // otherwise.
        let mut twice = [
            round_trip(&d[..2]),
            round_trip(&d[2..4]),
            round_trip(&d[2..3]),
            round_trip(&d[3..]),
        ]
        .concat();
        assert_eq!(settle(&mut twice), 2);
        assert_eq!(twice, once);
        // The runs along one edge are one piece each.
        assert_eq!(once.len(), 4);
        assert_eq!(once[0], piece(1, 0.0, 100.0, 100.0, 110.0));
        assert_eq!(once[2], piece(3, 0.0, 30.0, 110.0, 200.0));
    }

    #[test]
    fn a_second_writers_diverging_stretch_is_left_out() {
        let d = drive();
        let mut pieces = round_trip(&d);
        // Overlaps the kept stand in time: not a path the vehicle drove.
        pieces.push(piece(9, 0.0, 10.0, 150.0, 160.0));
        assert_eq!(settle(&mut pieces), 1);
        assert!(pieces.iter().all(|p| p.edge != 9));
    }

    #[test]
    fn a_window_holds_its_pieces_and_the_one_before() {
        let mut d = round_trip(&drive());
        settle(&mut d);
        let mut out = Vec::new();
        assert!(!window(&d, 205.0, 300.0, 10, &mut out));
        // The stand ended before the window: it comes first, for joining.
        assert_eq!(out.iter().map(|p| p.edge).collect::<Vec<_>>(), [3, 4]);
        out.clear();
        assert!(!window(&d, 201.0, 202.0, 10, &mut out));
        assert!(out.is_empty(), "no piece in the window: {out:?}");
        out.clear();
        assert!(window(&d, f64::NEG_INFINITY, f64::INFINITY, 2, &mut out));
        assert_eq!(out.len(), 2);
        out.clear();
        assert!(!window(&d, f64::NEG_INFINITY, f64::INFINITY, 10, &mut out));
        assert_eq!(out, d);
    }
}
