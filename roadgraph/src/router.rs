//! [`Router`]: what a caller wants from routing in one place, a customized
//! CCH for one metric plus turn restrictions. Point-to-point routes come from
//! the CCH and are checked against the restrictions; the rare route that
//! breaks one is recomputed exactly by the edge-based [`TurnDijkstra`].
//! The metric is shared by `Arc`: the engine's shards route on one live
//! traffic metric and swap in the next one when it is published.

use std::sync::Arc;

use crate::cch::{Cch, CchMetric, CchQuery};
use crate::dijkstra::{EdgePos, Metric, Route};
use crate::graph::Graph;
use crate::turns::{TurnDijkstra, TurnRules};

pub struct Router<'g> {
    cch: Cch<'g>,
    metric: Arc<CchMetric>,
    query: CchQuery,
    rules: TurnRules,
    fallback: Option<TurnDijkstra>,
    /// Routes that had to be recomputed because of a turn restriction.
    pub restricted_routes: u64,
}

impl<'g> Router<'g> {
    /// Customizes the graph's CCH for a built-in metric.
    pub fn new(g: &'g Graph, metric: Metric) -> Self {
        let cch = Cch::new(g);
        Self::with_metric(cch, CchMetric::for_metric(&cch, metric))
    }

    /// Uses an existing customization (e.g. live traffic weights).
    pub fn with_metric(cch: Cch<'g>, metric: CchMetric) -> Self {
        Self::shared(cch, Arc::new(metric))
    }

    /// Routes on a metric shared with other routers (one per thread).
    pub fn shared(cch: Cch<'g>, metric: Arc<CchMetric>) -> Self {
        Self {
            query: CchQuery::new(&cch),
            rules: TurnRules::new(cch.graph()),
            fallback: None,
            restricted_routes: 0,
            cch,
            metric,
        }
    }

    pub fn graph(&self) -> &'g Graph {
        self.cch.graph()
    }

    pub fn metric(&self) -> &CchMetric {
        &self.metric
    }

    /// The shared metric, to hand to another thread.
    pub fn shared_metric(&self) -> &Arc<CchMetric> {
        &self.metric
    }

    /// Routes on another metric from now on (a newer traffic customization).
    pub fn set_metric(&mut self, metric: Arc<CchMetric>) {
        self.metric = metric;
    }

    /// Partial customization, see [`CchMetric::update`]; copies the metric
    /// first if another router shares it.
    pub fn update_weights(&mut self, changes: &[(u32, u32)]) {
        Arc::make_mut(&mut self.metric).update(&self.cch, changes);
    }

    /// The shortest route that obeys the turn restrictions, from any of
    /// `from` to any of `to` (e.g. both directions of a street).
    pub fn route(&mut self, from: &[EdgePos], to: &[EdgePos]) -> Option<Route> {
        let r = self.query.route(&self.cch, &self.metric, from, to)?;
        if self.rules.path_ok(&r.edges) {
            return Some(r);
        }
        self.restricted_routes += 1;
        let g = self.cch.graph();
        let fallback = self.fallback.get_or_insert_with(|| TurnDijkstra::new(g));
        fallback.route(g, &*self.metric, &self.rules, from, to)
    }

    /// The shortest route ignoring turn restrictions (CCH only).
    pub fn route_unrestricted(&mut self, from: &[EdgePos], to: &[EdgePos]) -> Option<Route> {
        self.query.route(&self.cch, &self.metric, from, to)
    }

    /// Costs from `from` to each place, ignoring turn restrictions.
    pub fn one_to_many(&mut self, from: &[EdgePos], to: &[Vec<EdgePos>]) -> Vec<Option<u64>> {
        self.query.one_to_many(&self.cch, &self.metric, from, to)
    }

    /// Row-major cost matrix between places, ignoring turn restrictions.
    pub fn table(&mut self, from: &[Vec<EdgePos>], to: &[Vec<EdgePos>]) -> Vec<Option<u64>> {
        self.query.table(&self.cch, &self.metric, from, to)
    }
}
