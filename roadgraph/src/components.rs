//! What the strongly connected components of a graph look like, for `info`
//! and `import` to report: the graph keeps every road, and labels each node
//! with its component (see [`GraphData::node_component`](crate::GraphData)),
//! so a user can see how much of the map lies outside the main network.

use crate::Graph;

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
