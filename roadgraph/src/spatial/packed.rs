//! A static packed R-tree over road segments (the layout of Agafonkin's
//! flatbush): segments sorted along a Hilbert curve, grouped sixteen to a
//! leaf, leaves sixteen to a parent, and so on to one root, node `j`'s
//! children being entries `16j..16j+16` of the level below. No pointers, no
//! per-node allocations.
//!
//! A node stores its sixteen children's boxes quantized to bytes within its
//! own box (as bounding-volume hierarchies in ray tracers do): 64 bytes, one
//! cache line, per node visited, and a leaf's segments are read only where
//! their byte box meets the query. The fleet's queries hop across the map,
//! so nearly every node they visit is a cache miss: lines read is the cost.
//!
//! Coordinates are the graph's own fixed-point integers (1e-7 degree), and
//! quantization rounds outward, so every box contains what it stands for;
//! each segment carries its endpoints and their distances along the road, so
//! a query reads nothing else.

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

/// A child's box in its parent's frame: `[min_lat, min_lon, max_lat, max_lon]`
/// in 255ths of the frame's extent, rounded outward.
type QBox = [u8; 4];

/// One axis of a frame: its low end and extent.
#[derive(Clone, Copy)]
struct Axis {
    lo: i64,
    width: i64,
}

impl Axis {
    fn of(b: &Box4, axis: usize) -> Self {
        let lo = i64::from(b[axis]);
        Self {
            lo,
            width: i64::from(b[axis + 2]) - lo,
        }
    }

    /// The step at or below `v` (clamped to the frame).
    #[inline]
    fn down(self, v: i32) -> u8 {
        if self.width <= 0 {
            return 0;
        }
        ((i64::from(v) - self.lo) * 255)
            .div_euclid(self.width)
            .clamp(0, 255) as u8
    }

    /// The step at or above `v` (clamped to the frame).
    #[inline]
    fn up(self, v: i32) -> u8 {
        if self.width <= 0 {
            return 255;
        }
        (-((self.lo - i64::from(v)) * 255).div_euclid(self.width)).clamp(0, 255) as u8
    }

    /// The coordinate of step `q`, rounded down or up.
    #[inline]
    fn at(self, q: u8, round_up: bool) -> i32 {
        let n = i64::from(q) * self.width;
        let d = if round_up {
            -(-n).div_euclid(255)
        } else {
            n.div_euclid(255)
        };
        (self.lo + d) as i32
    }
}

/// Frame `frame`'s view of box `b`, rounded outward.
#[inline]
fn quantize(b: &Box4, frame: &Box4) -> QBox {
    let (lat, lon) = (Axis::of(frame, 0), Axis::of(frame, 1));
    [lat.down(b[0]), lon.down(b[1]), lat.up(b[2]), lon.up(b[3])]
}

/// The query box in a node's frame, widened by a step each way so float
/// rounding can only make it larger (a division per coordinate would cost
/// more than the node's cache line).
#[inline]
fn quantize_query(b: &Box4, frame: &Box4) -> QBox {
    let (lat, lon) = (Axis::of(frame, 0), Axis::of(frame, 1));
    let step = |axis: Axis, v: i32, up: bool| -> u8 {
        if axis.width <= 0 {
            return if up { 255 } else { 0 };
        }
        let x = (i64::from(v) - axis.lo) as f64 * (255.0 / axis.width as f64);
        let x = if up { x.ceil() + 1.0 } else { x.floor() - 1.0 };
        x.clamp(0.0, 255.0) as u8
    };
    [
        step(lat, b[0], false),
        step(lon, b[1], false),
        step(lat, b[2], true),
        step(lon, b[3], true),
    ]
}

/// The box a quantized child stands for (contains the child's true box).
#[inline]
fn dequantize(q: &QBox, frame: &Box4) -> Box4 {
    let (lat, lon) = (Axis::of(frame, 0), Axis::of(frame, 1));
    [
        lat.at(q[0], false),
        lon.at(q[1], false),
        lat.at(q[2], true),
        lon.at(q[3], true),
    ]
}

/// A node's children's quantized boxes, coordinate by coordinate
/// (`[min_lat, min_lon, max_lat, max_lon]`, sixteen children each), so the
/// test of all sixteen against a query is a few vector instructions.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Node([[u8; FANOUT]; 4]);

impl Node {
    const EMPTY: Node = Node([[255; FANOUT], [255; FANOUT], [0; FANOUT], [0; FANOUT]]);

    fn set(&mut self, k: usize, q: QBox) {
        for (c, v) in self.0.iter_mut().zip(q) {
            c[k] = v;
        }
    }

    fn get(&self, k: usize) -> QBox {
        [self.0[0][k], self.0[1][k], self.0[2][k], self.0[3][k]]
    }

    /// Bit `k` set when child `k`'s box meets `q` (written branch-free so
    /// it compiles to byte-wise vector compares).
    #[inline]
    fn hits(&self, q: &QBox) -> u32 {
        let [min_lat, min_lon, max_lat, max_lon] = &self.0;
        let mut mask = 0u32;
        for k in 0..FANOUT {
            let meets = (min_lat[k] <= q[2])
                & (q[0] <= max_lat[k])
                & (min_lon[k] <= q[3])
                & (q[1] <= max_lon[k]);
            mask |= u32::from(meets) << k;
        }
        mask
    }
}

/// The tree: segments in Hilbert order and every node's quantized children.
pub(crate) struct PackedTree {
    items: Vec<SegmentItem>,
    /// Nodes of all levels, leaves first; level `l` is `nodes[starts[l]..starts[l + 1]]`.
    nodes: Vec<Node>,
    starts: Vec<usize>,
    /// The root's exact box, the frame its children are quantized in.
    root: Box4,
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
        // Exact boxes of every node, bottom up.
        let mut exact: Vec<Box4> = items
            .chunks(FANOUT)
            .map(|c| c.iter().fold(EMPTY, |b, s| union(&b, &s.bbox())))
            .collect();
        let mut starts = vec![0, exact.len()];
        while exact.len() - starts[starts.len() - 2] > 1 {
            let level = starts[starts.len() - 2]..exact.len();
            let parents: Vec<Box4> = exact[level]
                .chunks(FANOUT)
                .map(|c| c.iter().fold(EMPTY, |b, x| union(&b, x)))
                .collect();
            exact.extend(parents);
            starts.push(exact.len());
        }
        let root = exact.last().copied().unwrap_or(EMPTY);
        // Quantize top down: each node's children in the frame the query
        // will know it by (its own quantized box, as its parent stored it).
        let mut nodes = vec![Node::EMPTY; exact.len()];
        let levels = starts.len() - 1;
        let mut frames = vec![root];
        for level in (0..levels).rev() {
            let mut below = Vec::new();
            for (j, frame) in frames.iter().enumerate() {
                let node = &mut nodes[starts[level] + j];
                let first = j * FANOUT;
                if level == 0 {
                    let end = (first + FANOUT).min(items.len());
                    for (k, s) in items[first..end].iter().enumerate() {
                        node.set(k, quantize(&s.bbox(), frame));
                    }
                } else {
                    let children = starts[level - 1]..starts[level];
                    let end = (children.start + first + FANOUT).min(children.end);
                    for (k, child) in (children.start + first..end).enumerate() {
                        node.set(k, quantize(&exact[child], frame));
                        below.push(dequantize(&node.get(k), frame));
                    }
                }
            }
            frames = below;
        }
        Self {
            items,
            nodes,
            starts,
            root,
        }
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Bytes held (items and nodes).
    pub fn heap_bytes(&self) -> usize {
        self.items.len() * std::mem::size_of::<SegmentItem>()
            + self.nodes.len() * std::mem::size_of::<Node>()
    }

    /// Calls `f` with every segment whose bounding box meets `query`.
    pub fn for_each_intersecting(&self, query: &Box4, mut f: impl FnMut(&SegmentItem)) {
        if self.items.is_empty() || !intersects(&self.root, query) {
            return;
        }
        let levels = self.starts.len() - 1;
        // (level, node, frame): at most FANOUT - 1 siblings wait per level,
        // and a u32 item count needs at most 8 levels.
        let mut stack = [(0u8, 0u32, EMPTY); 8 * FANOUT];
        stack[0] = ((levels - 1) as u8, 0, self.root);
        let mut top = 1;
        while top > 0 {
            top -= 1;
            let (level, node, frame) = stack[top];
            let q = quantize_query(query, &frame);
            let children = &self.nodes[self.starts[level as usize] + node as usize];
            let first = node as usize * FANOUT;
            let count = if level == 0 {
                self.items.len()
            } else {
                self.starts[level as usize] - self.starts[level as usize - 1]
            }
            .saturating_sub(first)
            .min(FANOUT);
            let mut mask = children.hits(&q) & ((1u32 << count) - 1);
            while mask != 0 {
                let k = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                if level == 0 {
                    let s = &self.items[first + k];
                    if intersects(&s.bbox(), query) {
                        f(s);
                    }
                } else {
                    let frame = dequantize(&children.get(k), &frame);
                    stack[top] = (level - 1, (first + k) as u32, frame);
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
        // Small towns, and coordinates over the whole range (huge frames,
        // negative values), where byte-quantized boxes are coarsest.
        for (n, extent) in [
            (1usize, 1_000_000),
            (16, 1_000_000),
            (17, 1_000_000),
            (255, 1_000_000),
            (4097, 1_000_000),
            (20_000, 1_000_000),
            (20_000, 1_799_000_000),
        ] {
            let coord = |next: &mut dyn FnMut(i32) -> i32| next(extent) - next(extent);
            let items: Vec<SegmentItem> = (0..n as u32)
                .map(|i| {
                    let (lat, lon) = (coord(&mut next), coord(&mut next));
                    item(i, lat, lon, next(2000) - 1000, next(2000) - 1000)
                })
                .collect();
            let tree = PackedTree::build(items.clone());
            assert_eq!(tree.len(), n);
            let mut hits = 0;
            for _ in 0..200 {
                let (lat, lon) = (coord(&mut next), coord(&mut next));
                let r = next(extent / 16);
                let q = [
                    lat.saturating_sub(r),
                    lon.saturating_sub(r),
                    lat.saturating_add(r),
                    lon.saturating_add(r),
                ];
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
                hits += got.len();
            }
            assert!(n < 255 || hits > 50, "queries too small to test: {hits}");
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
