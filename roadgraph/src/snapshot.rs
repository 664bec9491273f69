//! The snapshot file: a 64-byte header followed by the rkyv archive of
//! [`GraphData`](crate::GraphData).
//!
//! ```text
//! offset  size  field
//!      0     8  magic  b"LMGRAPH\0"
//!      8     4  format version (u32 LE), FORMAT_VERSION
//!     12     4  reserved, zero
//!     16     8  payload length in bytes (u64 LE)
//!     24     8  xxh3-64 of the payload (u64 LE)
//!     32    32  reserved, zero
//!     64     …  payload (rkyv archive, 16-byte aligned in the mapping)
//! ```
//!
//! Opening maps the file, checks magic, version, length and checksum, and
//! validates the archive's structure once (bytecheck); every later access is
//! zero-copy. Writing goes to a temporary file that is fsynced and renamed,
//! so a crash never leaves a half-written snapshot under the final name.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use crate::error::GraphError;
use crate::graph::{ArchivedGraphData, Graph};

pub const MAGIC: [u8; 8] = *b"LMGRAPH\0";
/// Bump whenever [`GraphData`](crate::GraphData)'s layout changes.
pub const FORMAT_VERSION: u32 = 5;
pub const HEADER_LEN: usize = 64;

/// True if the file starts with the snapshot magic.
pub fn looks_like_snapshot(prefix: &[u8]) -> bool {
    prefix.len() >= MAGIC.len() && prefix[..MAGIC.len()] == MAGIC
}

fn header(payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    h[24..32].copy_from_slice(&xxhash_rust::xxh3::xxh3_64(payload).to_le_bytes());
    h
}

/// Writes `graph` to `path` atomically (temporary file, fsync, rename).
pub fn save(graph: &Graph, path: &Path) -> Result<u64, GraphError> {
    let payload = graph.archive_bytes();
    let tmp = path.with_extension("graph.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&header(payload))?;
        f.write_all(payload)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        GraphError::io(path, e)
    })?;
    Ok((HEADER_LEN + payload.len()) as u64)
}

/// Maps and validates a snapshot.
pub fn load(path: &Path) -> Result<Graph, GraphError> {
    let file = File::open(path).map_err(|e| GraphError::io(path, e))?;
    // SAFETY: the mapping is read-only and private to this process. Snapshots
    // are written by rename, never in place, so the mapped file is not
    // truncated under us by lastmile itself.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| GraphError::io(path, e))?;
    let p = || path.to_path_buf();
    if mmap.len() < HEADER_LEN || !looks_like_snapshot(&mmap) {
        if looks_like_snapshot(&mmap) {
            return Err(GraphError::Truncated {
                path: p(),
                found: mmap.len() as u64,
                expected: HEADER_LEN as u64,
            });
        }
        return Err(GraphError::UnknownFormat { path: p() });
    }
    let word = |at: usize| u64::from_le_bytes(mmap[at..at + 8].try_into().expect("8 bytes"));
    let version = u32::from_le_bytes(mmap[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(GraphError::Version {
            path: p(),
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    let expected = HEADER_LEN as u64 + word(16);
    if mmap.len() as u64 != expected {
        return Err(GraphError::Truncated {
            path: p(),
            found: mmap.len() as u64,
            expected,
        });
    }
    let payload = &mmap[HEADER_LEN..];
    if xxhash_rust::xxh3::xxh3_64(payload) != word(24) {
        return Err(GraphError::Checksum { path: p() });
    }
    rkyv::access::<ArchivedGraphData, rkyv::rancor::Error>(payload).map_err(|e| {
        GraphError::Malformed {
            path: p(),
            reason: e.to_string(),
        }
    })?;
    check_invariants(path, payload)?;
    Ok(Graph::from_validated_mmap(mmap, HEADER_LEN))
}

/// Cross-array invariants that bytecheck cannot know: lengths agree and every
/// index is in range, so later accessors may index without checks failing.
fn check_invariants(path: &Path, payload: &[u8]) -> Result<(), GraphError> {
    // SAFETY: validated by `rkyv::access` just above.
    let d = unsafe { rkyv::access_unchecked::<ArchivedGraphData>(payload) };
    let bad = |reason: &str| GraphError::Malformed {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let (n, m, r, pts) = (
        d.node_lat.len(),
        d.head.len(),
        d.road_way.len(),
        d.point_lat.len(),
    );
    let lens_ok = d.node_lon.len() == n
        && d.first_out.len() == n + 1
        && d.first_in.len() == n + 1
        && [
            d.tail.len(),
            d.travel_time_ms.len(),
            d.speed_limit.len(),
            d.edge_road.len(),
            d.in_edge.len(),
        ]
        .iter()
        .all(|&l| l == m)
        && [
            d.road_class.len(),
            d.road_length_cm.len(),
            d.road_edge_fwd.len(),
            d.road_edge_bwd.len(),
        ]
        .iter()
        .all(|&l| l == r)
        && d.road_first_point.len() == r + 1
        && d.point_lon.len() == pts
        && d.point_dist_m.len() == pts;
    if !lens_ok {
        return Err(bad("array lengths disagree"));
    }
    let monotone = |v: &rkyv::vec::ArchivedVec<rkyv::rend::u32_le>, end: usize| {
        v.first().is_none_or(|f| f.to_native() == 0)
            && v.windows(2).all(|w| w[0].to_native() <= w[1].to_native())
            && v.last().is_none_or(|l| l.to_native() as usize == end)
    };
    if !monotone(&d.first_out, m)
        || !monotone(&d.first_in, m)
        || !monotone(&d.road_first_point, pts)
    {
        return Err(bad("offset arrays are not monotone"));
    }
    if d.road_first_point
        .windows(2)
        .any(|w| w[1].to_native() - w[0].to_native() < 2)
    {
        return Err(bad("a road has fewer than two points"));
    }
    let in_range = |v: u32, end: usize| (v as usize) < end;
    let edges_ok = (0..m).all(|e| {
        in_range(d.tail[e].to_native(), n)
            && in_range(d.head[e].to_native(), n)
            && in_range(d.in_edge[e].to_native(), m)
            && in_range(d.edge_road[e].to_native() & !crate::graph::REVERSED, r)
    });
    let roads_ok = (0..r).all(|i| {
        [
            d.road_edge_fwd[i].to_native(),
            d.road_edge_bwd[i].to_native(),
        ]
        .iter()
        .all(|&e| e == crate::graph::NO_EDGE || in_range(e, m))
    });
    let restrictions_ok = d.restrictions.iter().all(|t| {
        in_range(t.from_edge.to_native(), m)
            && in_range(t.to_edge.to_native(), m)
            && in_range(t.via_node.to_native(), n)
    });
    if !(edges_ok && roads_ok && restrictions_ok) {
        return Err(bad("an index is out of range"));
    }
    check_cch(&d.cch, n, m).map_err(bad)
}

/// The CCH's cross-array invariants: lengths, ranges, arcs pointing upwards,
/// the downward lists naming their arcs, and ranks forming a post-order of
/// the elimination tree with exact subtree sizes (customization walks the
/// tree by those sizes). Chordality itself is not checked (that costs a
/// customization); without it routes may be wrong, never out of bounds.
fn check_cch(c: &crate::cch::ArchivedCchData, n: usize, m: usize) -> Result<(), &'static str> {
    let arcs = c.up_head.len();
    let lens_ok = [
        c.rank.len(),
        c.order.len(),
        c.parent.len(),
        c.subtree_size.len(),
    ]
    .iter()
    .all(|&l| l == n)
        && c.up_first.len() == n + 1
        && c.down_first.len() == n + 1
        && [c.arc_tail.len(), c.down_tail.len(), c.down_arc.len()]
            .iter()
            .all(|&l| l == arcs)
        && c.edge_arc.len() == m
        && c.arc_first_edge.len() == arcs + 1
        && c.arc_edges.len() == m
        && arcs < crate::cch::NONE as usize;
    if !lens_ok {
        return Err("CCH array lengths disagree");
    }
    let monotone = |v: &rkyv::vec::ArchivedVec<rkyv::rend::u32_le>, end: usize| {
        v.first().is_none_or(|f| f.to_native() == 0)
            && v.windows(2).all(|w| w[0].to_native() <= w[1].to_native())
            && v.last().is_none_or(|l| l.to_native() as usize == end)
    };
    if !monotone(&c.up_first, arcs)
        || !monotone(&c.down_first, arcs)
        || !monotone(&c.arc_first_edge, m)
    {
        return Err("CCH offset arrays are not monotone");
    }
    let permutation = (0..n).all(|v| {
        let r = c.rank[v].to_native() as usize;
        r < n && c.order[r].to_native() as usize == v
    });
    // Each rank's arcs name it as their tail and head strictly upwards, sorted.
    let arcs_up = (0..n).all(|r| {
        let range = c.up_first[r].to_native() as usize..c.up_first[r + 1].to_native() as usize;
        let heads = &c.up_head[range.clone()];
        range
            .into_iter()
            .all(|a| c.arc_tail[a].to_native() as usize == r)
            && heads.first().is_none_or(|h| h.to_native() as usize > r)
            && heads.last().is_none_or(|h| (h.to_native() as usize) < n)
            && heads
                .windows(2)
                .all(|w| w[0].to_native() < w[1].to_native())
    });
    let down_ok = (0..n).all(|x| {
        let range = c.down_first[x].to_native() as usize..c.down_first[x + 1].to_native() as usize;
        range.into_iter().all(|k| {
            let a = c.down_arc[k].to_native() as usize;
            a < arcs
                && c.up_head[a].to_native() as usize == x
                && c.arc_tail[a].to_native() == c.down_tail[k].to_native()
        })
    });
    let edges_ok = c
        .edge_arc
        .iter()
        .all(|ea| ((ea.to_native() >> 1) as usize) < arcs)
        && c.arc_edges.iter().all(|e| (e.to_native() as usize) < m);
    if !(permutation && arcs_up && down_ok && edges_ok) {
        return Err("a CCH index is out of range");
    }
    // Post-order: subtree sizes recomputed from the parents must match, and
    // each subtree must be the block of ranks just below its root.
    let mut size = vec![1u32; n];
    let mut lowest: Vec<u32> = (0..n as u32).collect();
    for r in 0..n {
        let p = c.parent[r].to_native();
        if p == crate::cch::NONE {
            continue;
        }
        if (p as usize) <= r || (p as usize) >= n {
            return Err("a CCH tree parent is not above its child");
        }
        size[p as usize] += size[r];
        lowest[p as usize] = lowest[p as usize].min(lowest[r]);
    }
    let post_order = (0..n).all(|r| {
        let stored = c.subtree_size[r].to_native();
        stored == size[r] && lowest[r] as usize + stored as usize == r + 1
    });
    if !post_order || c.tree_height.to_native() as usize > n {
        return Err("CCH ranks are not a post-order of the elimination tree");
    }
    Ok(())
}
