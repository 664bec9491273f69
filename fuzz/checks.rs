//! What each fuzz target asserts about one input, shared by the cargo-fuzz
//! targets (`fuzz_targets/`) and the regression test that replays the
//! corpus and every crash found (`tests/fuzz_corpus.rs`). Anything may be
//! refused with an error; nothing may panic, hang or allocate without
//! bound, and whatever decodes must encode back to bytes that decode to
//! the same thing.

use std::path::Path;
use std::sync::OnceLock;

use lastmile_engine::MatcherConfig;
use lastmile_engine::evaluate::{evaluate, match_trace};
use lastmile_engine::trace::{Trace, read_csv, read_gpx};
use lastmile_ingest::protocol::{
    Ack, Hello, MAX_FRAME_LEN, PingBatch, Request, Response, Version, Welcome, split_frame,
};
use lastmile_roadgraph::progress::NoProgress;
use lastmile_roadgraph::synthetic::generate_city;
use lastmile_roadgraph::{CityParams, Graph};

/// A stream of protocol frames, as a server reads them from a client (and
/// a client from a server); the whole input is also tried as one payload
/// of the type its first two bytes name.
pub fn frames(data: &[u8]) {
    let mut rest = data;
    while let Ok(Some((h, payload, used))) = split_frame(rest, MAX_FRAME_LEN) {
        payload_of(h.kind, payload);
        rest = &rest[used..];
    }
    if let Some((kind, payload)) = data.split_first_chunk::<2>() {
        payload_of(u16::from_le_bytes(*kind), payload);
    }
}

/// Re-encodes `encoded` (one whole frame) after decoding it with `decode`:
/// the bytes must come back identical.
fn stable<T>(
    encoded: &[u8],
    decode: impl Fn(u16, &[u8]) -> Option<T>,
    encode: impl Fn(&T, &mut Vec<u8>),
) {
    let (h, p, used) = split_frame(encoded, MAX_FRAME_LEN)
        .expect("an encoded frame splits")
        .expect("an encoded frame is whole");
    assert_eq!(used, encoded.len(), "one frame encodes as one frame");
    let again = decode(h.kind, p).expect("an encoded message decodes");
    let mut twice = Vec::new();
    encode(&again, &mut twice);
    assert_eq!(encoded, &twice[..], "encoding is stable");
}

fn payload_of(kind: u16, payload: &[u8]) {
    for v in [Version::V1, Version::V2, Version::V3] {
        if let Ok(req) = Request::decode(v, kind, payload) {
            let mut b = Vec::new();
            req.encode(v, &mut b);
            stable(
                &b,
                |k, p| Request::decode(v, k, p).ok(),
                |r, out| r.encode(v, out),
            );
        }
        if let Ok(resp) = Response::decode(v, kind, payload) {
            let mut b = Vec::new();
            resp.encode(v, &mut b);
            stable(
                &b,
                |k, p| Response::decode(v, k, p).ok(),
                |r, out| r.encode(v, out),
            );
        }
    }
    if let Ok(h) = Hello::decode(payload) {
        let mut b = Vec::new();
        h.encode(&mut b);
        stable(&b, |_, p| Hello::decode(p).ok(), Hello::encode);
    }
    if let Ok(w) = Welcome::decode(payload) {
        let mut b = Vec::new();
        w.encode(&mut b);
        stable(&b, |_, p| Welcome::decode(p).ok(), Welcome::encode);
    }
    if let Ok(a) = Ack::decode(payload) {
        let mut b = Vec::new();
        a.encode(&mut b);
        stable(&b, |_, p| Ack::decode(p).ok(), Ack::encode);
    }
    if let Ok(batch) = PingBatch::decode(payload) {
        for rec in batch.iter() {
            let _ = rec.to_ping();
        }
    }
}

/// A small synthetic town the traces are matched on (built once).
fn town() -> &'static Graph {
    static TOWN: OnceLock<Graph> = OnceLock::new();
    TOWN.get_or_init(|| Graph::from_data(&generate_city(&CityParams::new(2_000, 1))))
}

/// Matches (and, with ground truth, evaluates) whatever a reader accepted,
/// as `lastmile match` and `evaluate` would.
fn match_and_evaluate(trace: &Trace) {
    let _ = trace.by_vehicle();
    let graph = town();
    let m = match_trace(graph, &MatcherConfig::default(), trace);
    if trace.has_truth() {
        let _ = evaluate(graph, trace, &m);
    }
}

/// A trace CSV, read then matched.
pub fn trace_csv(data: &[u8]) {
    if let Ok(trace) = read_csv(data) {
        match_and_evaluate(&trace);
    }
}

/// A GPX file, read then matched.
pub fn trace_gpx(data: &[u8]) {
    if let Ok(trace) = read_gpx(data, "fuzz") {
        match_and_evaluate(&trace);
    }
}

/// An OSM PBF, imported into a graph and loaded as `serve` would.
pub fn pbf(data: &[u8]) {
    if let Ok((graph, _)) =
        lastmile_roadgraph::import_pbf_bytes(Path::new("fuzz.osm.pbf"), data, &NoProgress)
    {
        let _ = Graph::from_data(&graph);
    }
}
