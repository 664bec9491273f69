use lastmile_engine::evaluate::match_trace;
use lastmile_engine::trace::read_csv;
use lastmile_engine::MatcherConfig;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let g = lastmile_roadgraph::snapshot::load(std::path::Path::new(&args[1])).unwrap();
    let mut trace = read_csv(std::fs::File::open(&args[2]).unwrap()).unwrap();
    let veh = &args[3];
    trace.rows.retain(|r| &r.vehicle == veh);
    let (t0, t1): (f64, f64) = (args[4].parse().unwrap(), args[5].parse().unwrap());
    let m = match_trace(&g, &MatcherConfig::default(), &trace);
    let groups = trace.by_vehicle();
    let (_, rows) = groups.iter().find(|(v, _)| v == veh).unwrap();
    let mut near = Vec::new();
    for &r in rows {
        let row = &trace.rows[r];
        let t = row.ping.time - 1767225600.0;
        if t < t0 || t > t1 { continue; }
        let f = m.finalized[r];
        let im = m.immediate[r];
        g.edges_within(row.ping.pos, 50.0, &mut near);
        let c: Vec<String> = near.iter().take(8).map(|c| format!("e{}/w{}@{:.0}:{:.1}", c.edge, g.way_id(c.edge) % 1000, c.offset_m, c.distance_m)).collect();
        println!("t {:.0} truth w{} | fin {:?} | imm e{} {:?} | {}", t, row.truth.unwrap().way_id % 1000,
            f.map(|f| (f.edge, (f.offset_m*10.0).round()/10.0)), im.edge, im.status, c.join(" "));
    }
}
