use lastmile_engine::kubicka;
use lastmile_engine::{MatchOutput, Matcher, MatcherConfig, VehicleTrack};
use lastmile_roadgraph::{Graph, build};
use std::io::BufReader;
fn open(p: &std::path::Path) -> BufReader<flate2::read::GzDecoder<std::fs::File>> {
    BufReader::new(flate2::read::GzDecoder::new(
        std::fs::File::open(p).unwrap(),
    ))
}
#[test]
fn debug16() {
    let dir = std::path::Path::new("/work/shared/data/kubicka-2015/00000016");
    let f = |k: &str| open(&dir.join(format!("00000016.{k}.gz")));
    let net = kubicka::read_network(f("nodes"), f("arcs")).unwrap();
    let g = Graph::from_data(&build::build_matching_graph(&net.net, "x".into()).unwrap());
    let trace = kubicka::read_track(f("track"), "v").unwrap();
    let mut m = Matcher::new(&g, MatcherConfig::default());
    let mut t = VehicleTrack::new();
    let mut out = MatchOutput::default();
    let mut near = Vec::new();
    for (i, r) in trace.rows.iter().enumerate().take(506) {
        let s = m.push(&mut t, &r.ping, &mut out);
        if i >= 498 {
            g.edge_index()
                .approaches_within(&g, r.ping.pos, 50.0, &mut near);
            eprintln!(
                "{i} {:?} imm edge {} way {} ",
                s,
                out.immediate.edge,
                if out.immediate.edge < g.num_edges() as u32 {
                    g.way_id(out.immediate.edge)
                } else {
                    -1
                }
            );
            for c in near.iter().take(14) {
                eprintln!(
                    "   cand way {} edge {} d {:.1} off {:.1}",
                    g.way_id(c.edge),
                    c.edge,
                    c.distance_m,
                    c.offset_m
                );
            }
        }
    }
}
