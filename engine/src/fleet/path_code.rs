//! Paths kept compact: every vehicle holds the path to its next stop and the
//! paths between its stops, a hundred edges or more each, so a fleet holds
//! tens of millions of edge ids. Graph snapshots number nodes along a
//! Hilbert curve and edges by tail, so consecutive edges of a path have
//! nearby ids: a path is stored as the differences between consecutive ids,
//! zigzag-encoded as LEB128 varints (one or two bytes for most edges instead
//! of four). Paths are only ever read front to back (advancing along a leg,
//! retiming, looking an edge up), which is what this encoding allows.

/// An encoded path of edge ids.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, Default, PartialEq)]
pub struct PathCode {
    bytes: Box<[u8]>,
    len: u32,
}

/// A place in a [`PathCode`]: where the next edge's bytes start, and the id
/// its difference is taken from.
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, Default, PartialEq,
)]
pub struct PathPos {
    byte: u32,
    before: u32,
}

impl PathCode {
    pub fn encode(edges: &[u32]) -> Self {
        let mut bytes = Vec::with_capacity(edges.len() * 2);
        let mut before = 0u32;
        for &e in edges {
            // Wrapping: the difference of any two u32 ids, as an i32.
            let d = e.wrapping_sub(before) as i32;
            let mut z = ((d << 1) ^ (d >> 31)) as u32;
            while z >= 0x80 {
                bytes.push((z as u8) | 0x80);
                z >>= 7;
            }
            bytes.push(z as u8);
            before = e;
        }
        Self {
            bytes: bytes.into_boxed_slice(),
            len: u32::try_from(edges.len()).expect("a path of fewer than 2^32 edges"),
        }
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The edge at `pos` and the place after it; `None` at the end.
    #[inline]
    pub fn read(&self, pos: PathPos) -> Option<(u32, PathPos)> {
        let mut at = pos.byte as usize;
        let mut z = 0u32;
        let mut shift = 0;
        loop {
            let b = *self.bytes.get(at)?;
            at += 1;
            z |= u32::from(b & 0x7f) << shift;
            if b < 0x80 {
                break;
            }
            shift += 7;
        }
        let d = ((z >> 1) as i32) ^ -((z & 1) as i32);
        let e = pos.before.wrapping_add(d as u32);
        Some((
            e,
            PathPos {
                byte: at as u32,
                before: e,
            },
        ))
    }

    /// The edges, first to last.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let mut pos = PathPos::default();
        std::iter::from_fn(move || {
            let (e, next) = self.read(pos)?;
            pos = next;
            Some(e)
        })
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_roadgraph::rng::Rng;

    #[test]
    fn round_trips_any_path() {
        let mut rng = Rng::seed(11);
        for round in 0..500 {
            let n = rng.below(200) as usize;
            // Nearby ids, far ones, and the extremes of u32.
            let edges: Vec<u32> = (0..n)
                .map(|_| match round % 3 {
                    0 => 1_000_000 + rng.below(5_000) as u32,
                    1 => rng.below(u64::from(u32::MAX) + 1) as u32,
                    _ => [0, 1, u32::MAX, u32::MAX - 1, 1 << 31][rng.below(5) as usize],
                })
                .collect();
            let code = PathCode::encode(&edges);
            assert_eq!(code.len(), edges.len());
            assert_eq!(code.iter().collect::<Vec<_>>(), edges);
            // Reading place by place gives the same edges and ends at the end.
            let mut pos = PathPos::default();
            for &e in &edges {
                let (got, next) = code.read(pos).unwrap();
                assert_eq!(got, e);
                pos = next;
            }
            assert!(code.read(pos).is_none());
        }
    }

    #[test]
    fn nearby_ids_take_a_byte_or_two() {
        let edges: Vec<u32> = (0..100u32).map(|i| 500_000 + i * 37 % 61).collect();
        let code = PathCode::encode(&edges);
        // The first id costs three bytes, the rest one each (|d| < 64).
        assert_eq!(code.heap_bytes(), 3 + 99);
        let far = PathCode::encode(&[0, u32::MAX, 0, 1 << 31]);
        assert_eq!(far.iter().collect::<Vec<_>>(), [0, u32::MAX, 0, 1 << 31]);
    }
}
