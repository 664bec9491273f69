//! `lastmile-roadgraph` owns the road network and nothing about vehicles: OSM
//! PBF import ([`import`]), the compact routable graph ([`Graph`]) and its
//! versioned zero-copy snapshot ([`snapshot`]), the edge spatial index that
//! finds candidate roads for a GPS ping ([`spatial`]), shortest paths
//! ([`dijkstra`]) and the deterministic synthetic city ([`synthetic`]).
//!
//! The usual entry point is [`open`], which takes either a snapshot (mapped in
//! milliseconds) or an `.osm.pbf` (imported in memory).

pub mod build;
pub mod cch;
pub mod components;
pub mod csr;
pub mod dijkstra;
pub mod error;
pub mod free_flow;
pub mod geo;
pub mod graph;
pub mod highway;
pub mod import;
pub mod network;
pub mod progress;
pub mod rng;
pub mod router;
pub mod snap;
pub mod snapshot;
pub mod spatial;
pub mod synthetic;
pub mod testdata;
pub mod turns;

use std::io::Read;
use std::path::Path;

pub use cch::{Cch, CchMetric, CchQuery};
pub use dijkstra::{Dijkstra, EdgePos, Metric, Route};
pub use error::GraphError;
pub use geo::{LatLon, LatLonE7};
pub use graph::{Graph, GraphData, GraphMeta, LengthArc, TurnRestriction};
pub use highway::{HighwayClass, SpeedLimit};
pub use import::ImportReport;
pub use progress::{NoProgress, Progress};
pub use router::Router;
pub use spatial::EdgeCandidate;
pub use synthetic::CityParams;
pub use turns::{TurnDijkstra, TurnRules};

/// Imports an OSM PBF into graph data (not yet serialised).
pub fn import_pbf(
    path: &Path,
    progress: &dyn Progress,
) -> Result<(GraphData, ImportReport), GraphError> {
    let (net, report) = import::read_pbf(path, progress)?;
    progress.stage("building graph", 0);
    Ok((build_roads(&net, path)?, report))
}

/// The graph of an imported network, named after its file.
fn build_roads(net: &network::RawNetwork, path: &Path) -> Result<GraphData, GraphError> {
    let source = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    build::build_graph(net, source).ok_or_else(|| GraphError::NoRoads {
        path: path.to_path_buf(),
    })
}

/// Imports PBF bytes already in memory (fuzzing, tests); `name` labels errors.
pub fn import_pbf_bytes(
    name: &Path,
    bytes: &[u8],
    progress: &dyn Progress,
) -> Result<(GraphData, ImportReport), GraphError> {
    let (net, report) = import::read_pbf_bytes(name, bytes, progress)?;
    Ok((build_roads(&net, name)?, report))
}

/// What kind of file a path holds, judged by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Snapshot,
    Pbf,
}

pub fn file_kind(path: &Path) -> Result<FileKind, GraphError> {
    let mut prefix = [0u8; 16];
    let mut f = std::fs::File::open(path).map_err(|e| GraphError::io(path, e))?;
    let mut got = 0;
    while got < prefix.len() {
        match f
            .read(&mut prefix[got..])
            .map_err(|e| GraphError::io(path, e))?
        {
            0 => break,
            n => got += n,
        }
    }
    if snapshot::looks_like_snapshot(&prefix[..got]) {
        Ok(FileKind::Snapshot)
    } else if import::looks_like_pbf(&prefix[..got]) {
        Ok(FileKind::Pbf)
    } else {
        Err(GraphError::UnknownFormat {
            path: path.to_path_buf(),
        })
    }
}

/// Opens a graph from a snapshot (mmap) or an `.osm.pbf` (imported in memory).
pub fn open(path: &Path, progress: &dyn Progress) -> Result<Graph, GraphError> {
    match file_kind(path)? {
        FileKind::Snapshot => snapshot::load(path),
        FileKind::Pbf => Ok(Graph::from_data(&import_pbf(path, progress)?.0)),
    }
}
