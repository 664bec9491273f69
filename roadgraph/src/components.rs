//! What the strongly connected components of a graph look like, for `info`
//! and `import` to report: the graph keeps every road, and labels each node
//! with its component (see [`GraphData::node_component`](crate::GraphData)),
//! so a user can see how much of the map lies outside the main network.

use crate::Graph;

/// Per component: whether its roads lead into the main network, and
/// whether the main network leads into them (the main one does both).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MainReach {
    reaches_main: Vec<bool>,
    reached_from_main: Vec<bool>,
}

impl MainReach {
    /// Two searches over the whole graph, from the main component forward
    /// and backward.
    pub(crate) fn of(g: &Graph) -> Self {
        let n = g.num_nodes();
        let walk = |forward: bool| {
            let mut seen = vec![false; n];
            let mut stack: Vec<u32> = (0..n as u32).filter(|&v| g.component(v) == 0).collect();
            for &v in &stack {
                seen[v as usize] = true;
            }
            let mut comp = vec![false; g.num_components()];
            while let Some(v) = stack.pop() {
                comp[g.component(v) as usize] = true;
                let mut visit = |w: u32| {
                    if !seen[w as usize] {
                        seen[w as usize] = true;
                        stack.push(w);
                    }
                };
                if forward {
                    g.out_edges(v).for_each(|e| visit(g.head(e)));
                } else {
                    g.in_edges(v).for_each(|e| visit(g.tail(e)));
                }
            }
            comp
        };
        Self {
            reached_from_main: walk(true),
            reaches_main: walk(false),
        }
    }

    /// Whether a road leads from component `a` to component `b` through
    /// the main network (or they are one). Exact for every pair except two
    /// small components joined directly rather than through the main
    /// network, which this reports as not joined.
    pub fn joined(&self, a: u32, b: u32) -> bool {
        a == b
            || (self.reaches_main.get(a as usize) == Some(&true)
                && self.reached_from_main.get(b as usize) == Some(&true))
    }
}

/// Sizes of a graph's strongly connected components.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComponentSummary {
    /// Number of components (1 for a strongly connected graph).
    pub components: usize,
    /// Nodes and edges of the main (largest) component.
    pub main_nodes: u64,
    pub main_edges: u64,
    /// Edges inside the other components, and edges joining two components
    /// (a one-way exit from a car park, a one-way street off the map).
    pub other_edges: u64,
    pub link_edges: u64,
    /// Nodes of the largest components after the main one, at most five.
    pub next_largest: Vec<u32>,
}

impl ComponentSummary {
    pub fn of(g: &Graph) -> Self {
        let mut s = Self {
            components: g.num_components(),
            main_nodes: if g.num_components() > 0 {
                u64::from(g.component_nodes(0))
            } else {
                0
            },
            next_largest: (1..g.num_components().min(6) as u32)
                .map(|c| g.component_nodes(c))
                .collect(),
            ..Self::default()
        };
        for e in 0..g.num_edges() as u32 {
            let (a, b) = (g.component(g.tail(e)), g.component(g.head(e)));
            match (a == b, a) {
                (true, 0) => s.main_edges += 1,
                (true, _) => s.other_edges += 1,
                (false, _) => s.link_edges += 1,
            }
        }
        s
    }

    /// Edges outside the main component (inside others, or joining two).
    pub fn outside_edges(&self) -> u64 {
        self.other_edges + self.link_edges
    }

    /// One line for `import` and `info`.
    pub fn describe(&self) -> String {
        let total = self.main_edges + self.outside_edges();
        format!(
            "{} strongly connected component{}; the main one has {} nodes and {} of {} edges ({:.1}%), the rest {} edges{}",
            self.components,
            if self.components == 1 { "" } else { "s" },
            self.main_nodes,
            self.main_edges,
            total,
            100.0 * self.main_edges as f64 / total.max(1) as f64,
            self.outside_edges(),
            if self.next_largest.is_empty() {
                String::new()
            } else {
                format!(
                    " (next largest: {} nodes)",
                    self.next_largest
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::build_graph;
    use crate::highway::{HighwayClass, SpeedLimit, WayAttributes};
    use crate::network::{RawNetwork, RawWay};

    #[test]
    fn sources_sinks_and_islands_are_told_apart() {
        let mut net = RawNetwork::default();
        for i in 0..8 {
            net.add_node(450_000_000 + (i / 4) * 9_000, 70_000_000 + (i % 4) * 13_000);
        }
        let mut way = |id, nodes: Vec<u32>, backward| {
            net.ways.push(RawWay {
                id,
                nodes,
                attrs: WayAttributes {
                    class: HighwayClass::Residential,
                    forward: true,
                    backward,
                    limit_forward: SpeedLimit::Unknown,
                    limit_backward: SpeedLimit::Unknown,
                },
            })
        };
        way(1, vec![0, 1, 2], true); // main street (two pieces at 1)
        way(2, vec![1, 5], true); // and a side street
        way(3, vec![4, 0], false); // a car park's one-way exit: a source
        way(4, vec![2, 6], false); // a one-way street off the map: a sink
        way(5, vec![3, 7], true); // an island
        let g = Graph::from_data(&build_graph(&net, "t".into()).unwrap());
        let comp_of_way = |w: i64, head: bool| {
            let e = (0..g.num_edges() as u32)
                .find(|&e| g.way_id(e) == w)
                .unwrap();
            g.component(if head { g.head(e) } else { g.tail(e) })
        };
        let (main, source, sink, island) = (
            comp_of_way(1, true),
            comp_of_way(3, false),
            comp_of_way(4, true),
            comp_of_way(5, true),
        );
        assert_eq!(main, 0);
        let r = g.main_reach();
        assert!(r.joined(source, main) && !r.joined(main, source));
        assert!(r.joined(main, sink) && !r.joined(sink, main));
        assert!(r.joined(source, sink) && !r.joined(sink, source));
        assert!(!r.joined(island, main) && !r.joined(main, island));
        assert!(r.joined(island, island) && r.joined(main, main));
        let s = ComponentSummary::of(&g);
        assert_eq!((s.components, s.main_nodes), (4, 4));
        assert_eq!(s.link_edges, 2);
        assert_eq!(s.other_edges, 2);
    }
}
