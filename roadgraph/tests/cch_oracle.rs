//! The CCH against Dijkstra on the same integer weights: exact costs for
//! thousands of random edge-position queries (travel time, distance, random
//! weights), valid unpacked paths that cost what they claim, one-to-many and
//! table equal to pairwise queries, and partial customization equal to a fresh
//! full customization after many rounds of random changes.

mod common;

use common::{path_cost, random_place, random_pos};
use lastmile_roadgraph::rng::Rng;
use lastmile_roadgraph::{
    Cch, CchMetric, CchQuery, CityParams, Dijkstra, EdgePos, Graph, Metric, synthetic,
};

/// Point-to-point, one-to-many and table queries against Dijkstra on
/// `weights`; returns how many point-to-point queries were unreachable.
fn check_queries(
    g: &Graph,
    cch: &Cch,
    m: &CchMetric,
    weights: &[u32],
    queries: usize,
    seed: u64,
) -> usize {
    let mut unreachable = 0;
    let mut rng = Rng::seed(seed);
    let mut q = CchQuery::new(cch);
    let mut dijkstra = Dijkstra::new(g);
    for i in 0..queries {
        let s = random_pos(g, &mut rng);
        let t = if i % 10 == 0 {
            EdgePos {
                edge: s.edge,
                offset_m: rng.unit() * g.length_m(s.edge),
            }
        } else {
            random_pos(g, &mut rng)
        };
        let want = dijkstra.route(g, weights, &[s], &[t]);
        let got = q.route(cch, m, &[s], &[t]);
        assert_eq!(
            got.as_ref().map(|r| r.cost),
            want.as_ref().map(|r| r.cost),
            "query {i}: {s:?} -> {t:?}"
        );
        assert_eq!(
            q.cost(cch, m, &[s], &[t]),
            want.as_ref().map(|r| r.cost),
            "query {i}: cost alone"
        );
        let Some(r) = got else {
            unreachable += 1;
            continue;
        };
        assert_eq!(
            (r.edges[0], *r.edges.last().unwrap()),
            (s.edge, t.edge),
            "query {i}: endpoints"
        );
        for w in r.edges.windows(2) {
            assert_eq!(
                g.head(w[0]),
                g.tail(w[1]),
                "query {i}: unpacked path is not connected"
            );
        }
        assert_eq!(
            path_cost(g, weights, &r.edges, s, t),
            r.cost,
            "query {i}: path does not cost its claim"
        );
    }

    // One source to 20 stops, and a small table of places.
    for _ in 0..(queries / 100).max(3) {
        let s = random_pos(g, &mut rng);
        let stops: Vec<Vec<EdgePos>> = (0..20).map(|_| vec![random_pos(g, &mut rng)]).collect();
        let many = q.one_to_many(cch, m, &[s], &stops);
        for (j, t) in stops.iter().enumerate() {
            assert_eq!(
                many[j],
                dijkstra.route(g, weights, &[s], t).map(|r| r.cost),
                "one-to-many target {j}"
            );
        }
        let sources: Vec<Vec<EdgePos>> = (0..4).map(|_| random_place(g, &mut rng)).collect();
        let targets: Vec<Vec<EdgePos>> = (0..5).map(|_| random_place(g, &mut rng)).collect();
        let table = q.table(cch, m, &sources, &targets);
        for (i, src) in sources.iter().enumerate() {
            for (j, dst) in targets.iter().enumerate() {
                let want = dijkstra.route(g, weights, src, dst).map(|r| r.cost);
                assert_eq!(table[i * targets.len() + j], want, "table {i},{j}");
            }
        }
    }
    unreachable
}

fn random_weights(g: &Graph, rng: &mut Rng) -> Vec<u32> {
    (0..g.num_edges())
        .map(|_| {
            let span = if rng.chance(0.1) { 1_000_000 } else { 50_000 };
            1 + rng.below(span) as u32
        })
        .collect()
}

/// Checks every kind of query; returns how many point-to-point queries
/// (by travel time and by distance) had no route.
fn check_graph(g: &Graph, queries: usize, partial_rounds: usize, seed: u64) -> usize {
    let cch = Cch::new(g);
    let mut unreachable = 0;
    for metric in [Metric::Time, Metric::Distance] {
        let m = CchMetric::for_metric(&cch, metric);
        unreachable += check_queries(g, &cch, &m, &metric.weights(g), queries, seed);
        // Perfect customization prunes arcs (a road graph always has some
        // a detour through higher ranks beats); without it, every arc.
        let (fwd, bwd) = m.search_arcs().expect("full customization prunes");
        assert!(
            fwd < cch.num_arcs() && bwd < cch.num_arcs(),
            "{metric:?}: nothing pruned"
        );
        let basic = CchMetric::basic(&cch, metric.weights(g));
        assert_eq!(basic.search_arcs(), None);
        assert_eq!(basic, m);
        check_queries(g, &cch, &basic, &metric.weights(g), queries / 4, seed + 7);
    }
    let mut rng = Rng::seed(seed ^ 0xABCD);
    let w = random_weights(g, &mut rng);
    check_partial(
        g,
        &cch,
        w,
        partial_rounds,
        queries,
        seed,
        &mut rng,
        |old, rng| match rng.below(3) {
            0 => (old / 2).max(1),
            1 => old.saturating_mul(3).min(5_000_000),
            _ => 1 + rng.below(60_000) as u32,
        },
    );
    // Tiny weights: most arcs have several equally cheap supports, the case
    // where an update must tell the support it recorded from an equal one.
    let w = (0..g.num_edges())
        .map(|_| 1 + rng.below(3) as u32)
        .collect();
    check_partial(
        g,
        &cch,
        w,
        partial_rounds / 2,
        queries,
        seed + 3,
        &mut rng,
        |_, rng| 1 + rng.below(3) as u32,
    );
    unreachable
}

/// Rounds of partial customization of random edge subsets (new weight from
/// `reweigh(old)`), each compared with a fresh full customization, with
/// queries against Dijkstra every tenth round.
#[allow(clippy::too_many_arguments)]
fn check_partial(
    g: &Graph,
    cch: &Cch,
    mut w: Vec<u32>,
    rounds: usize,
    queries: usize,
    seed: u64,
    rng: &mut Rng,
    reweigh: impl Fn(u32, &mut Rng) -> u32,
) {
    let mut m = CchMetric::new(cch, w.clone());
    assert_eq!(m.check_vias(cch), Ok(()));
    check_queries(g, cch, &m, &w, queries / 2, seed + 1);
    for round in 0..rounds {
        let k = 1 + rng.below(if round % 5 == 0 { 200 } else { 10 }) as usize;
        let changes: Vec<(u32, u32)> = (0..k)
            .map(|_| {
                let e = rng.below(g.num_edges() as u64) as u32;
                let new = reweigh(w[e as usize], rng);
                (e, new)
            })
            .collect();
        for &(e, new) in &changes {
            w[e as usize] = new;
        }
        m.update(cch, &changes);
        assert_eq!(
            m,
            CchMetric::new(cch, w.clone()),
            "round {round}: partial != full customization"
        );
        assert_eq!(
            m.check_vias(cch),
            Ok(()),
            "round {round}: an unpacking does not realise its arc's weight"
        );
        if round % 10 == 9 {
            // As updated (every arc relaxed), then pruned again.
            check_queries(g, cch, &m, &w, queries / 10, seed + round as u64);
            let mut pruned = m.clone();
            pruned.perfect(cch);
            assert!(pruned.search_arcs().is_some());
            check_queries(g, cch, &pruned, &w, queries / 10, seed + round as u64 + 1);
        }
    }
}

#[test]
fn monaco() {
    let Some((_, g)) = common::imported("monaco.osm.pbf") else {
        return;
    };
    // Monaco's roads outside the main component make some pairs
    // unreachable: the CCH must say so exactly when Dijkstra does.
    let unreachable = check_graph(g, 2_000, 60, 1);
    assert!(unreachable > 0, "no unreachable pair among 4,000 queries");
}

#[test]
fn andorra() {
    let Some((_, g)) = common::imported("andorra.osm.pbf") else {
        return;
    };
    check_graph(g, 2_000, 60, 2);
}

#[test]
fn synthetic_cities_of_several_sizes() {
    for (edges, seed) in [(1_000, 3), (10_000, 4), (60_000, 5)] {
        let g = Graph::from_data(&synthetic::generate_city(&CityParams::new(edges, seed)));
        check_graph(&g, 1_000, 30, seed);
    }
}

#[test]
fn porto_spot_check() {
    let Some((_, g)) = common::imported("porto_portugal.osm.pbf") else {
        return;
    };
    let cch = Cch::new(g);
    let m = CchMetric::for_metric(&cch, Metric::Time);
    check_queries(g, &cch, &m, &Metric::Time.weights(g), 300, 9);
}

#[test]
fn unreachable_edges_and_infinite_weights() {
    // Closing every edge into a node (weight "infinity") makes it unreachable
    // for both engines alike.
    let g = Graph::from_data(&synthetic::generate_city(&CityParams::new(2_000, 8)));
    let cch = Cch::new(&g);
    let mut w = Metric::Time.weights(&g);
    let v = g.head(0);
    let closed: Vec<u32> = g.in_edges(v).collect();
    for &e in &closed {
        w[e as usize] = u32::MAX;
    }
    let m = CchMetric::new(&cch, w.clone());
    let mut q = CchQuery::new(&cch);
    let mut d = Dijkstra::new(&g);
    let out = g.out_edges(v).next().unwrap();
    let target = EdgePos {
        edge: out,
        offset_m: 0.0,
    };
    let from = EdgePos {
        edge: g.out_edges(g.head(out)).next().unwrap(),
        offset_m: 0.0,
    };
    let got = q.route(&cch, &m, &[from], &[target]).map(|r| r.cost);
    let want = d.route(&g, &w[..], &[from], &[target]).map(|r| r.cost);
    assert_eq!(got, None, "a node behind closed edges is unreachable");
    assert_eq!(want, None);
    // Everything else still routes.
    check_queries(&g, &cch, &m, &w, 300, 8);
}

#[test]
fn one_way_corner_cases() {
    // A target behind the start on a one-way street means going round the
    // block; ahead of it, the route stays on the edge. Both equal Dijkstra.
    let g = Graph::from_data(&synthetic::generate_city(&CityParams::new(6_000, 12)));
    let cch = Cch::new(&g);
    let m = CchMetric::for_metric(&cch, Metric::Time);
    let mut q = CchQuery::new(&cch);
    let mut d = Dijkstra::new(&g);
    let one_way: Vec<u32> = (0..g.num_edges() as u32)
        .filter(|&e| g.reverse_edge(e).is_none() && g.length_m(e) > 20.0)
        .take(50)
        .collect();
    assert!(one_way.len() >= 20, "a city has one-way streets");
    for e in one_way {
        let len = g.length_m(e);
        let (near, far) = (
            EdgePos {
                edge: e,
                offset_m: 0.25 * len,
            },
            EdgePos {
                edge: e,
                offset_m: 0.75 * len,
            },
        );
        let ahead = q.route(&cch, &m, &[near], &[far]).unwrap();
        assert_eq!(ahead.edges, vec![e]);
        assert_eq!(
            Some(ahead.cost),
            d.route(&g, &Metric::Time, &[near], &[far]).map(|r| r.cost)
        );
        let behind = q.route(&cch, &m, &[far], &[near]).unwrap();
        assert!(
            behind.edges.len() >= 3,
            "must leave the street and come back: {:?}",
            behind.edges
        );
        assert_eq!((behind.edges[0], *behind.edges.last().unwrap()), (e, e));
        assert_eq!(
            Some(behind.cost),
            d.route(&g, &Metric::Time, &[far], &[near]).map(|r| r.cost)
        );
        assert!(behind.cost > ahead.cost);
    }
}
