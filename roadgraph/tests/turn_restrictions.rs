//! Turn restrictions: constructed `no_*` and `only_*` cases on a synthetic
//! city, and on every real map the hybrid router (CCH, checked, edge-based
//! fallback) against the edge-based Dijkstra for thousands of random routes.
//! Run with `--nocapture` to see the share of routes restrictions change.

mod common;

use common::random_pos;
use lastmile_roadgraph::rng::Rng;
use lastmile_roadgraph::{
    CityParams, EdgePos, Graph, Metric, Router, TurnDijkstra, TurnRestriction, TurnRules, synthetic,
};

/// A junction with an incoming edge and at least three ways out.
fn junction(g: &Graph) -> (u32, u32, Vec<u32>) {
    (0..g.num_nodes() as u32)
        .find_map(|v| {
            let outs: Vec<u32> = g.out_edges(v).collect();
            let a = g.in_edges(v).next()?;
            (outs.len() >= 3).then_some((v, a, outs))
        })
        .expect("a city has crossings")
}

fn with_restrictions(g: &Graph, extra: &[TurnRestriction]) -> Graph {
    let mut data = g.to_data();
    data.restrictions.extend_from_slice(extra);
    Graph::from_data(&data)
}

#[test]
fn no_and_only_restrictions_are_obeyed() {
    let base = Graph::from_data(&synthetic::generate_city(&CityParams::new(4_000, 6)));
    let (v, a, outs) = junction(&base);
    let straight = outs
        .iter()
        .copied()
        .find(|&b| Some(b) != base.reverse_edge(a))
        .unwrap();
    let from = [EdgePos {
        edge: a,
        offset_m: 0.0,
    }];
    let to = [EdgePos {
        edge: straight,
        offset_m: base.length_m(straight),
    }];

    let g = with_restrictions(
        &base,
        &[TurnRestriction {
            kind: 0,
            from_edge: a,
            via_node: v,
            to_edge: straight,
        }],
    );
    let mut router = Router::new(&g, Metric::Time);
    let free = router.route_unrestricted(&from, &to).unwrap();
    assert_eq!(
        free.edges,
        vec![a, straight],
        "without rules the turn is direct"
    );
    let legal = router.route(&from, &to).unwrap();
    assert!(
        legal.edges.windows(2).all(|w| w != [a, straight]),
        "the forbidden turn is not taken"
    );
    assert!(legal.cost > free.cost);
    assert_eq!(router.restricted_routes, 1);

    // only_*: from `a` the only way on is `straight`; any other exit is a detour.
    let other = outs
        .iter()
        .copied()
        .find(|&b| b != straight && Some(b) != base.reverse_edge(a))
        .unwrap();
    let g = with_restrictions(
        &base,
        &[TurnRestriction {
            kind: 1,
            from_edge: a,
            via_node: v,
            to_edge: straight,
        }],
    );
    let rules = TurnRules::new(&g);
    assert!(rules.allowed(a, straight) && !rules.allowed(a, other));
    let mut router = Router::new(&g, Metric::Time);
    let r = router
        .route(
            &from,
            &[EdgePos {
                edge: other,
                offset_m: g.length_m(other),
            }],
        )
        .unwrap();
    assert!(r.edges.windows(2).all(|w| w != [a, other]));
    assert!(rules.path_ok(&r.edges));
}

/// Returns (routes, routes whose unrestricted optimum breaks a rule).
fn hybrid_is_exact(g: &Graph, queries: usize, seed: u64) -> (usize, usize) {
    let rules = TurnRules::new(g);
    let mut router = Router::new(g, Metric::Time);
    let mut exact = TurnDijkstra::new(g);
    let mut rng = Rng::seed(seed);
    let weights = Metric::Time.weights(g);
    let mut changed = 0;
    for i in 0..queries {
        let (s, t) = (random_pos(g, &mut rng), random_pos(g, &mut rng));
        let free = router.route_unrestricted(&[s], &[t]);
        let legal = router.route(&[s], &[t]);
        let want = exact.route(g, &weights[..], &rules, &[s], &[t]);
        assert_eq!(
            legal.as_ref().map(|r| r.cost),
            want.as_ref().map(|r| r.cost),
            "query {i}"
        );
        // Pairs in components no road joins have no route either way.
        let Some(free) = free else {
            assert!(
                legal.is_none(),
                "query {i}: a legal route without a free one"
            );
            continue;
        };
        if let Some(l) = legal {
            assert!(rules.path_ok(&l.edges), "query {i}: illegal turn");
            assert!(l.cost >= free.cost);
            for w in l.edges.windows(2) {
                assert_eq!(g.head(w[0]), g.tail(w[1]));
            }
        }
        changed += usize::from(!rules.path_ok(&free.edges));
    }
    (queries, changed)
}

#[test]
fn real_maps_hybrid_router_is_exact() {
    for (name, seed) in [
        ("monaco.osm.pbf", 1),
        ("andorra.osm.pbf", 2),
        ("heidelberg.test.osm.pbf", 3),
        ("malta-latest-2018.osm.pbf", 4),
    ] {
        let Some((_, g)) = common::imported(name) else {
            return;
        };
        let (n, changed) = hybrid_is_exact(g, 1_500, seed);
        println!(
            "{name}: {} turn restrictions; {changed} of {n} random routes ({:.2}%) break one when ignored",
            g.restrictions().len(),
            100.0 * changed as f64 / n as f64
        );
    }
}
