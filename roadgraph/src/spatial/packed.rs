//! A static packed R-tree over road segments (the layout of Agafonkin's
//! flatbush): segments sorted along a Hilbert curve, grouped sixteen to a
//! leaf, leaves sixteen to a parent, and so on to one root, every level a
//! flat array of boxes where node `j`'s children are entries `16j..16j+16`
//! of the level below. No pointers, no per-node allocations: a query walks
//! contiguous runs of 256 bytes, and the upper levels (a few thousand boxes)
//! stay in the cache while the fleet's queries hop across the map.
//!
//! Coordinates are the graph's own fixed-point integers (1e-7 degree), so
//! boxes are exact and need no padding; each segment carries its endpoints
//! and their distances along the road, so a query reads nothing else.

/// Children per node.
const FANOUT: usize = 16;

/// `[min_lat, min_lon, max_lat, max_lon]`, 1e-7 degree.
pub(crate) type Box4 = [i32; 4];

/// One segment of one road's polyline, with everything a query measures.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct SegmentItem {
    /// First and second point, `[lat, lon]` in 1e-7 degree.
    pub a: [i32; 2],
    pub b: [i32; 2],
    /// Metres from the road's start to each point.
    pub d0: f32,
    pub d1: f32,
    pub road: u32,
    /// Index of the segment's first point in the graph's point arrays.
    pub point: u32,
}

impl SegmentItem {
    #[inline]
    fn bbox(&self) -> Box4 {
        [
            self.a[0].min(self.b[0]),
            self.a[1].min(self.b[1]),
            self.a[0].max(self.b[0]),
            self.a[1].max(self.b[1]),
        ]
    }
}

#[inline]
fn intersects(x: &Box4, y: &Box4) -> bool {
    x[0] <= y[2] && y[0] <= x[2] && x[1] <= y[3] && y[1] <= x[3]
}

fn union(x: &Box4, y: &Box4) -> Box4 {
    [
        x[0].min(y[0]),
        x[1].min(y[1]),
        x[2].max(y[2]),
        x[3].max(y[3]),
    ]
}

const EMPTY: Box4 = [i32::MAX, i32::MAX, i32::MIN, i32::MIN];

/// Position of `(x, y)` (each below 2^16) along a Hilbert curve of order 16.
fn hilbert(mut x: u32, mut y: u32) -> u64 {
    const N: u32 = 1 << 16;
    let mut d = 0u64;
    let mut s = N / 2;
    while s > 0 {
        let rx = u32::from(x & s != 0);
        let ry = u32::from(y & s != 0);
        d += u64::from(s) * u64::from(s) * u64::from((3 * rx) ^ ry);
        if ry == 0 {
            if rx == 1 {
                x = N - 1 - x;
                y = N - 1 - y;
            }
            std::mem::swap(&mut x, &mut y);
        }
        s /= 2;
    }
    d
}

/// The tree: segments in Hilbert order and the boxes of every level.
pub(crate) struct PackedTree {
    items: Vec<SegmentItem>,
    /// Boxes of all levels, leaves' first; level `l` is `boxes[starts[l]..starts[l + 1]]`.
    boxes: Vec<Box4>,
    starts: Vec<usize>,
}

impl PackedTree {
    pub fn build(mut items: Vec<SegmentItem>) -> Self {
        let all = items.iter().fold(EMPTY, |b, s| union(&b, &s.bbox()));
        let span = |lo: i32, hi: i32, v: i32| -> u32 {
            let w = i64::from(hi) - i64::from(lo);
            if w <= 0 {
                0
            } else {
                (((i64::from(v) - i64::from(lo)) * 65_535) / w) as u32
            }
        };
        // Sort by the Hilbert position of each box's centre; road and point
        // break ties, so the layout depends on the graph alone.
        items.sort_by_cached_key(|s| {
            let b = s.bbox();
            let cy = ((i64::from(b[0]) + i64::from(b[2])) / 2) as i32;
            let cx = ((i64::from(b[1]) + i64::from(b[3])) / 2) as i32;
            (
                hilbert(span(all[1], all[3], cx), span(all[0], all[2], cy)),
                s.road,
                s.point,
            )
        });
        let mut boxes: Vec<Box4> = items
            .chunks(FANOUT)
            .map(|c| c.iter().fold(EMPTY, |b, s| union(&b, &s.bbox())))
            .collect();
        let mut starts = vec![0, boxes.len()];
        while boxes.len() - starts[starts.len() - 2] > 1 {
            let level = starts[starts.len() - 2]..boxes.len();
            let parents: Vec<Box4> = boxes[level]
                .chunks(FANOUT)
                .map(|c| c.iter().fold(EMPTY, |b, x| union(&b, x)))
                .collect();
            boxes.extend(parents);
            starts.push(boxes.len());
        }
        Self {
            items,
            boxes,
            starts,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Bytes held (items and boxes).
    pub fn heap_bytes(&self) -> usize {
        self.items.len() * std::mem::size_of::<SegmentItem>()
            + self.boxes.len() * std::mem::size_of::<Box4>()
    }

    /// Calls `f` with every segment whose bounding box meets `query`.
    pub fn for_each_intersecting(&self, query: &Box4, mut f: impl FnMut(&SegmentItem)) {
        let levels = self.starts.len() - 1;
        if self.items.is_empty() || !intersects(&self.boxes[self.starts[levels - 1]], query) {
            return;
        }
        // (level, node): at most FANOUT - 1 siblings wait per level, and a
        // u32 item count needs at most 8 levels.
        let mut stack = [(0u8, 0u32); 16 * FANOUT];
        let mut top = 0;
        stack[top] = ((levels - 1) as u8, 0);
        top += 1;
        while top > 0 {
            top -= 1;
            let (level, node) = stack[top];
            let first = node as usize * FANOUT;
            if level == 0 {
                let end = (first + FANOUT).min(self.items.len());
                for s in &self.items[first..end] {
                    if intersects(&s.bbox(), query) {
                        f(s);
                    }
                }
                continue;
            }
            let below = self.starts[level as usize - 1]..self.starts[level as usize];
            let end = (below.start + first + FANOUT).min(below.end);
            for child in below.start + first..end {
                if intersects(&self.boxes[child], query) {
                    stack[top] = (level - 1, (child - below.start) as u32);
                    top += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(i: u32, lat: i32, lon: i32, dlat: i32, dlon: i32) -> SegmentItem {
        SegmentItem {
            a: [lat, lon],
            b: [lat + dlat, lon + dlon],
            d0: 0.0,
            d1: 1.0,
            road: i,
            point: i,
        }
    }

    /// Every query finds exactly the segments a scan finds, for trees of
    /// one item, of exactly one full node, and of several levels.
    #[test]
    fn queries_equal_a_scan() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |m: i32| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % m as u64) as i32
        };
        for n in [1usize, 16, 17, 255, 4097, 20_000] {
            let items: Vec<SegmentItem> = (0..n as u32)
                .map(|i| {
                    item(
                        i,
                        next(1_000_000),
                        next(1_000_000),
                        next(2000) - 1000,
                        next(2000) - 1000,
                    )
                })
                .collect();
            let tree = PackedTree::build(items.clone());
            assert_eq!(tree.len(), n);
            for _ in 0..200 {
                let (lat, lon) = (next(1_000_000), next(1_000_000));
                let r = next(60_000);
                let q = [lat - r, lon - r, lat + r, lon + r];
                let mut got = Vec::new();
                tree.for_each_intersecting(&q, |s| got.push(s.road));
                got.sort_unstable();
                let mut want: Vec<u32> = items
                    .iter()
                    .filter(|s| intersects(&s.bbox(), &q))
                    .map(|s| s.road)
                    .collect();
                want.sort_unstable();
                assert_eq!(got, want, "n = {n}");
            }
        }
    }

    #[test]
    fn hilbert_visits_every_cell_of_a_small_square_once() {
        // The first 4x4 cells of the order-16 curve's lower-left quadrant
        // chain are a permutation of 0..16 (scaled by the outer levels).
        let mut d: Vec<u64> = (0..4)
            .flat_map(|x| (0..4).map(move |y| hilbert(x, y)))
            .collect();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), 16);
        assert_eq!(d, (0..16).collect::<Vec<u64>>());
    }
}
