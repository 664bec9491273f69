//! OpenStreetMap PBF import: decodes blobs in parallel (osmpbf + rayon), keeps
//! car-routable ways and via-node turn restrictions, joins node coordinates,
//! and hands a [`RawNetwork`] to the builder.
//!
//! Every blob is decoded once. Node coordinates are kept as sorted arrays
//! (16 bytes per OSM node) and merge-joined with the ids the kept ways
//! reference; this is the fast path for city to country extracts, which is
//! what an in-memory tracking engine serves.

use std::io::Read;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use osmpbf::{BlobDecode, BlobReader, Element, PrimitiveBlock, RelMemberType};
use rayon::prelude::*;

use crate::error::GraphError;
use crate::highway::{WayAttributes, way_attributes};
use crate::network::{MISSING_COORD, RawNetwork, RawRestriction, RawWay, RestrictionKind};
use crate::progress::Progress;

/// What one import saw, for the summary line and `info`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub blobs: u64,
    pub osm_nodes: u64,
    pub osm_ways: u64,
    pub car_ways: u64,
    pub restrictions: u64,
    /// Restrictions whose via member is a way (not supported yet) or malformed.
    pub skipped_restrictions: u64,
    /// Way node references with no node in the file.
    pub missing_nodes: u64,
    /// Traffic signals on car ways.
    pub signals: u64,
}

/// True if `prefix` (the first bytes of a file) starts like an OSM PBF: a
/// big-endian BlobHeader length followed by the `OSMHeader` type field.
pub fn looks_like_pbf(prefix: &[u8]) -> bool {
    prefix.len() >= 15 && prefix[4] == 0x0A && prefix[5] == 9 && &prefix[6..15] == b"OSMHeader"
}

#[derive(Default)]
struct BlockOutput {
    index: usize,
    node_ids: Vec<i64>,
    node_lat: Vec<i32>,
    node_lon: Vec<i32>,
    /// Ids of nodes tagged as traffic signals.
    signals: Vec<i64>,
    osm_ways: u64,
    ways: Vec<(i64, Vec<i64>, WayAttributes)>,
    restrictions: Vec<(RestrictionKind, bool, i64, i64, i64)>,
    skipped_restrictions: u64,
}

/// Counts bytes read, so progress can follow the file.
struct CountingReader<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Reads a PBF file into a raw network.
pub fn read_pbf(
    path: &Path,
    progress: &dyn Progress,
) -> Result<(RawNetwork, ImportReport), GraphError> {
    let file = std::fs::File::open(path).map_err(|e| GraphError::io(path, e))?;
    let size = file.metadata().map_err(|e| GraphError::io(path, e))?.len();
    let mut prefix = [0u8; 16];
    let got = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut prefix))
        .map_err(|e| GraphError::io(path, e))?;
    let input = std::io::BufReader::with_capacity(1 << 20, file);
    read_pbf_from(path, &prefix[..got], input, size, progress)
}

/// Reads PBF bytes already in memory (tests and fuzzing); `name` only
/// labels errors.
pub fn read_pbf_bytes(
    name: &Path,
    bytes: &[u8],
    progress: &dyn Progress,
) -> Result<(RawNetwork, ImportReport), GraphError> {
    let prefix = &bytes[..bytes.len().min(16)];
    read_pbf_from(name, prefix, bytes, bytes.len() as u64, progress)
}

/// The import proper: `prefix` is the input's first bytes (to recognise
/// the format before decoding anything), `size` its length for progress.
fn read_pbf_from<R: Read + Send>(
    path: &Path,
    prefix: &[u8],
    input: R,
    size: u64,
    progress: &dyn Progress,
) -> Result<(RawNetwork, ImportReport), GraphError> {
    if !looks_like_pbf(prefix) {
        return Err(GraphError::UnknownFormat {
            path: path.to_path_buf(),
        });
    }
    let corrupt = |reason: String| GraphError::CorruptPbf {
        path: path.to_path_buf(),
        reason,
    };

    progress.stage("decoding", size);
    let count = Arc::new(AtomicU64::new(0));
    let reader = BlobReader::new(CountingReader {
        inner: input,
        count: Arc::clone(&count),
    });
    let outputs: Vec<Result<BlockOutput, String>> = reader
        .enumerate()
        .inspect(|_| progress.set(count.load(Ordering::Relaxed)))
        .par_bridge()
        .map(|(index, blob)| {
            let blob = blob.map_err(|e| e.to_string())?;
            // osmpbf can panic on some malformed input (e.g. an unknown relation
            // member type); a corrupt file must be an error, never a crash.
            catch_unwind(AssertUnwindSafe(|| decode_blob(index, &blob)))
                .unwrap_or_else(|_| Err("the decoder rejected a malformed block".to_string()))
        })
        .collect();
    progress.set(size);

    let mut blocks = Vec::with_capacity(outputs.len());
    for out in outputs {
        blocks.push(out.map_err(&corrupt)?);
    }
    // par_bridge gives no order; blob order makes the result deterministic.
    blocks.sort_unstable_by_key(|b| b.index);
    if blocks.is_empty() {
        return Err(corrupt("the file holds no blocks".into()));
    }
    progress.stage("joining nodes", 0);
    Ok(assemble(blocks))
}

fn decode_blob(index: usize, blob: &osmpbf::Blob) -> Result<BlockOutput, String> {
    let mut out = BlockOutput {
        index,
        ..Default::default()
    };
    match blob.decode().map_err(|e| e.to_string())? {
        BlobDecode::OsmData(block) => read_block(&block, &mut out),
        BlobDecode::OsmHeader(_) | BlobDecode::Unknown(_) => {}
    }
    Ok(out)
}

fn read_block(block: &PrimitiveBlock, out: &mut BlockOutput) {
    block.for_each_element(|el| match el {
        Element::DenseNode(n) => {
            out.node_ids.push(n.id());
            out.node_lat.push(n.decimicro_lat());
            out.node_lon.push(n.decimicro_lon());
            if is_signal(n.tags()) {
                out.signals.push(n.id());
            }
        }
        Element::Node(n) => {
            out.node_ids.push(n.id());
            out.node_lat.push(n.decimicro_lat());
            out.node_lon.push(n.decimicro_lon());
            if is_signal(n.tags()) {
                out.signals.push(n.id());
            }
        }
        Element::Way(w) => {
            out.osm_ways += 1;
            if let Ok(attrs) = way_attributes(w.tags()) {
                out.ways.push((w.id(), w.refs().collect(), attrs));
            }
        }
        Element::Relation(r) => read_restriction(&r, out),
    });
}

/// Traffic lights for cars: `highway=traffic_signals`, or a crossing
/// with lights (`crossing=traffic_signals` on a `highway=crossing`).
fn is_signal<'a>(tags: impl IntoIterator<Item = (&'a str, &'a str)>) -> bool {
    tags.into_iter()
        .any(|(k, v)| (k == "highway" || k == "crossing") && v == "traffic_signals")
}

fn read_restriction(r: &osmpbf::Relation<'_>, out: &mut BlockOutput) {
    let (mut is_restriction, mut value, mut car_value, mut except_car) = (false, None, None, false);
    for (k, v) in r.tags() {
        match k {
            "type" => is_restriction = v == "restriction",
            "restriction" => value = Some(v),
            "restriction:motorcar" => car_value = Some(v),
            "except" => {
                except_car = v
                    .split(';')
                    .any(|x| matches!(x.trim(), "motorcar" | "motor_vehicle"))
            }
            _ => {}
        }
    }
    let Some(value) = car_value
        .or(value)
        .filter(|_| is_restriction && !except_car)
    else {
        return;
    };
    let kind = if value.starts_with("no_") {
        RestrictionKind::No
    } else if value.starts_with("only_") {
        RestrictionKind::Only
    } else {
        return;
    };
    let (mut from, mut via, mut to, mut ok) = (None, None, None, true);
    for m in r.members() {
        let role = m.role().unwrap_or("");
        let slot = match (role, &m.member_type) {
            ("from", RelMemberType::Way) => &mut from,
            ("to", RelMemberType::Way) => &mut to,
            ("via", RelMemberType::Node) => &mut via,
            ("via", _) => {
                ok = false; // via-way restriction
                continue;
            }
            _ => continue,
        };
        if slot.replace(m.member_id).is_some() {
            ok = false; // several from/via/to members: malformed
        }
    }
    match (ok, from, via, to) {
        (true, Some(f), Some(v), Some(t)) => {
            out.restrictions
                .push((kind, value.ends_with("u_turn"), f, v, t))
        }
        _ => out.skipped_restrictions += 1,
    }
}

fn assemble(blocks: Vec<BlockOutput>) -> (RawNetwork, ImportReport) {
    let mut report = ImportReport {
        blobs: blocks.len() as u64,
        ..Default::default()
    };
    // All node ids in file order; PBFs are sorted by id, but check.
    let total: usize = blocks.iter().map(|b| b.node_ids.len()).sum();
    let (mut ids, mut lats, mut lons) = (
        Vec::with_capacity(total),
        Vec::with_capacity(total),
        Vec::with_capacity(total),
    );
    let mut ways = Vec::new();
    let mut relations = Vec::new();
    let mut signals = Vec::new();
    for b in blocks {
        signals.extend_from_slice(&b.signals);
        ids.extend_from_slice(&b.node_ids);
        lats.extend_from_slice(&b.node_lat);
        lons.extend_from_slice(&b.node_lon);
        report.osm_ways += b.osm_ways;
        report.skipped_restrictions += b.skipped_restrictions;
        ways.extend(b.ways);
        relations.extend(b.restrictions);
    }
    report.osm_nodes = ids.len() as u64;
    if !ids.windows(2).all(|w| w[0] < w[1]) {
        let mut perm: Vec<u32> = (0..ids.len() as u32).collect();
        perm.sort_by_key(|&i| ids[i as usize]);
        ids = perm.iter().map(|&i| ids[i as usize]).collect();
        lats = perm.iter().map(|&i| lats[i as usize]).collect();
        lons = perm.iter().map(|&i| lons[i as usize]).collect();
    }

    // Raw nodes: every id referenced by a kept way, sorted.
    let mut needed: Vec<i64> = ways
        .iter()
        .flat_map(|(_, refs, _)| refs.iter().copied())
        .collect();
    needed.par_sort_unstable();
    needed.dedup();
    let mut net = RawNetwork {
        lat: vec![MISSING_COORD; needed.len()],
        lon: vec![MISSING_COORD; needed.len()],
        ..Default::default()
    };
    let mut j = 0;
    for (i, &id) in needed.iter().enumerate() {
        while j < ids.len() && ids[j] < id {
            j += 1;
        }
        if j < ids.len() && ids[j] == id {
            net.lat[i] = lats[j];
            net.lon[i] = lons[j];
        } else {
            report.missing_nodes += 1;
        }
    }
    let raw = |id: i64| needed.binary_search(&id).ok().map(|i| i as u32);
    report.car_ways = ways.len() as u64;
    net.ways = ways
        .into_iter()
        .map(|(id, refs, attrs)| RawWay {
            id,
            nodes: refs
                .iter()
                .map(|&r| raw(r).expect("every ref is in `needed`"))
                .collect(),
            attrs,
        })
        .collect();
    // Signals on a kept way, as raw node indices.
    net.signals = signals.iter().filter_map(|&id| raw(id)).collect();
    net.signals.sort_unstable();
    report.signals = net.signals.len() as u64;
    report.restrictions = relations.len() as u64;
    net.restrictions = relations
        .into_iter()
        // A via node on no car way cannot be resolved; the builder counts it.
        .map(|(kind, u_turn, from_way, via, to_way)| RawRestriction {
            kind,
            u_turn,
            from_way,
            via: raw(via).unwrap_or(u32::MAX),
            to_way,
        })
        .collect();
    (net, report)
}
