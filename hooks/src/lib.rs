//! `lastmile-hooks` delivers the durable event log to each fleet's webhook
//! endpoints (`[[webhooks]]` in `lastmile.toml`), signed as Standard
//! Webhooks v1 ([`sign`]), at least once and in order per endpoint, with
//! the specification's retries ([`deliver`]), never to the server's own
//! network unless allowed ([`address`]). Each endpoint is one task that
//! reads the log from the store, or on a cluster from the cluster's event
//! stream on whichever node holds the endpoint (`log`); ingest never
//! waits on it.

pub mod address;
pub mod deliver;
pub mod links;
mod log;
pub mod sign;

use std::sync::Arc;

use lastmile_node::Node;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Starts every configured endpoint's delivery (call inside a tokio
/// runtime); each ends when `closing` turns true.
pub fn start(
    node: &Arc<Node>,
    closing: &watch::Receiver<bool>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let endpoints = node
        .config
        .webhooks
        .iter()
        .map(|e| deliver::Endpoint::new(node.clone(), e.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if endpoints.is_empty() {
        return Ok(Vec::new());
    }
    // On a cluster each endpoint is delivered by one node at a time: this
    // node claims those it should (see `lastmile_cluster::deliveries`).
    if let Some(member) = node.cluster.get() {
        let names = endpoints.iter().map(|e| e.entry.name.clone()).collect();
        member.deliveries().hold(names);
    }
    let registry = Arc::downgrade(node);
    node.add_stats(Arc::new(move || {
        registry.upgrade().map_or_else(Vec::new, |n| {
            n.webhooks.all().iter().flat_map(|s| s.snapshot()).collect()
        })
    }));
    Ok(endpoints
        .into_iter()
        .map(|e| {
            node.webhooks.add(e.status.clone());
            let closing = closing.clone();
            // A thread and a single-threaded runtime per endpoint: its
            // requests' connection tasks then run where the delivery
            // does. On the shared runtime every request woke another
            // worker thread and back, which cost more than the request.
            tokio::task::spawn_blocking(move || match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(e.run(closing)),
                Err(err) => e.status.failed(format!("no runtime for delivery: {err}")),
            })
        })
        .collect())
}
