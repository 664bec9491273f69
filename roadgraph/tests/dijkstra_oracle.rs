//! Our Dijkstra against petgraph's on the same integer weights, and routes
//! between positions on edges against a composition of one-to-all searches;
//! every returned path is checked to be connected and to cost what it claims.

mod common;

use common::{path_cost, random_pos};
use lastmile_roadgraph::dijkstra::{EdgeWeight, partial_weight};
use lastmile_roadgraph::rng::Rng;
use lastmile_roadgraph::{CityParams, Dijkstra, EdgePos, Graph, Metric, synthetic};
use petgraph::graph::{DiGraph, NodeIndex};

fn petgraph_of(g: &Graph, metric: Metric) -> DiGraph<(), u64, u32> {
    let mut pg = DiGraph::with_capacity(g.num_nodes(), g.num_edges());
    for _ in 0..g.num_nodes() {
        pg.add_node(());
    }
    for e in 0..g.num_edges() as u32 {
        pg.add_edge(
            NodeIndex::new(g.tail(e) as usize),
            NodeIndex::new(g.head(e) as usize),
            metric.weight(g, e),
        );
    }
    pg
}

fn against_petgraph(g: &Graph, sources: usize, seed: u64) {
    let mut rng = Rng::seed(seed);
    let mut ours = Dijkstra::new(g);
    for metric in [Metric::Time, Metric::Distance] {
        let pg = petgraph_of(g, metric);
        for _ in 0..sources {
            let s = rng.below(g.num_nodes() as u64) as u32;
            let theirs =
                petgraph::algo::dijkstra(&pg, NodeIndex::new(s as usize), None, |e| *e.weight());
            ours.one_to_all(g, &metric, &[(s, 0)]);
            // Several components: what petgraph does not reach, neither do
            // we; what shares the source's component, both reach.
            for v in 0..g.num_nodes() as u32 {
                let reached = theirs.contains_key(&NodeIndex::new(v as usize));
                assert_eq!(ours.distance(v).is_some(), reached, "{s} -> {v}");
                if g.component(v) == g.component(s) {
                    assert!(reached, "{s} -> {v} in one component");
                }
            }
            for (v, d) in theirs {
                assert_eq!(
                    ours.distance(v.index() as u32),
                    Some(d),
                    "{metric:?} {s} -> {}",
                    v.index()
                );
            }
        }
    }
}

fn routes_between_positions(g: &Graph, queries: usize, seed: u64) {
    let mut rng = Rng::seed(seed);
    let mut router = Dijkstra::new(g);
    let mut oracle = Dijkstra::new(g);
    let mut unreachable = 0;
    for q in 0..queries {
        let metric = if q % 2 == 0 {
            Metric::Time
        } else {
            Metric::Distance
        };
        let s = random_pos(g, &mut rng);
        // Every tenth query stays on the same edge, ahead of or behind the start.
        let t = if q % 10 == 0 {
            EdgePos {
                edge: s.edge,
                offset_m: rng.unit() * g.length_m(s.edge),
            }
        } else {
            random_pos(g, &mut rng)
        };
        let r = router.route(g, &metric, &[s], &[t]);

        oracle.one_to_all(g, &metric, &[(g.head(s.edge), 0)]);
        let through_graph = oracle.distance(g.tail(t.edge)).map(|d| {
            partial_weight(g, &metric, s.edge, s.offset_m, g.length_m(s.edge))
                + d
                + partial_weight(g, &metric, t.edge, 0.0, t.offset_m)
        });
        let mut want = through_graph;
        if s.edge == t.edge && t.offset_m >= s.offset_m {
            let along = partial_weight(g, &metric, s.edge, s.offset_m, t.offset_m);
            want = Some(want.map_or(along, |w| w.min(along)));
        }
        let Some(want) = want else {
            assert!(r.is_none(), "query {q}: {s:?} -> {t:?} is unreachable");
            unreachable += 1;
            continue;
        };
        let r = r.unwrap_or_else(|| panic!("query {q}: {s:?} -> {t:?} has a route"));
        assert_eq!(r.cost, want, "query {q}: {s:?} -> {t:?}");

        assert_eq!(r.edges[0], s.edge);
        assert_eq!(*r.edges.last().unwrap(), t.edge);
        for w in r.edges.windows(2) {
            assert_eq!(
                g.head(w[0]),
                g.tail(w[1]),
                "query {q}: path is not connected"
            );
        }
        assert_eq!(
            path_cost(g, &metric, &r.edges, s, t),
            r.cost,
            "query {q}: path does not cost what the route claims"
        );
        assert!(r.distance_m >= 0.0 && r.duration_s >= 0.0);
    }
    // Real maps have a few roads outside the main component: some random
    // pairs are unreachable, most are not.
    assert!(
        unreachable * 5 < queries,
        "{unreachable} of {queries} unreachable"
    );
}

#[test]
fn monaco_matches_petgraph_and_routes_are_exact() {
    let Some((_, g)) = common::imported("monaco.osm.pbf") else {
        return;
    };
    against_petgraph(g, 30, 1);
    routes_between_positions(g, 2_000, 2);
}

#[test]
fn andorra_matches_petgraph_and_routes_are_exact() {
    let Some((_, g)) = common::imported("andorra.osm.pbf") else {
        return;
    };
    against_petgraph(g, 30, 3);
    routes_between_positions(g, 2_000, 4);
}

#[test]
fn synthetic_cities_match_petgraph_and_routes_are_exact() {
    for (edges, seed) in [(3_000, 1), (30_000, 2)] {
        let g = Graph::from_data(&synthetic::generate_city(&CityParams::new(edges, seed)));
        against_petgraph(&g, 10, seed);
        routes_between_positions(&g, 500, seed + 10);
    }
}

#[test]
fn either_direction_of_a_street_is_a_valid_endpoint() {
    let g = Graph::from_data(&synthetic::generate_city(&CityParams::new(5_000, 9)));
    let mut router = Dijkstra::new(&g);
    let mut rng = Rng::seed(5);
    for _ in 0..200 {
        let s = random_pos(&g, &mut rng);
        let t = random_pos(&g, &mut rng);
        let mut targets = vec![t];
        if let Some(rev) = g.reverse_edge(t.edge) {
            targets.push(EdgePos {
                edge: rev,
                offset_m: g.length_m(rev) - t.offset_m,
            });
        }
        let both = router.route(&g, &Metric::Time, &[s], &targets).unwrap();
        let best_single = targets
            .iter()
            .map(|t| router.route(&g, &Metric::Time, &[s], &[*t]).unwrap().cost)
            .min()
            .unwrap();
        assert_eq!(both.cost, best_single);
    }
}
