//! Where an endpoint reads the event log and keeps its place in it: the
//! node's own store on a single node; in a cluster, the cluster's event
//! stream and places bucket (`lastmile_cluster::deliveries`), delivering
//! only while this node holds the endpoint's claim. Event ids are the
//! store's or the stream's sequence: on a cluster, the same on every node.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use lastmile_cluster::deliveries::{Deliveries, EventReader, Place, SaveError};
use lastmile_engine::fleet::{Event, EventFilter};
use lastmile_node::durable::Durable;
use lastmile_node::endpoints::WebhookEntry;
use tokio::sync::watch;

/// How long a cluster read waits for its first event (then the endpoint
/// waits for the next as on a single node).
const READ_WAIT: Duration = Duration::from_millis(50);

/// Another node took the endpoint's place: this one stops delivering it.
pub(crate) struct Deposed;

pub(crate) enum Log {
    Store(Arc<Durable>),
    Cluster(Box<OnCluster>),
}

/// The endpoint on a cluster: its claim and place, and its reader of the
/// event stream.
pub(crate) struct OnCluster {
    deliveries: Arc<Deliveries>,
    reader: tokio::sync::Mutex<EventReader>,
    /// The place as this node took it (`None`: not held).
    place: Mutex<Option<Place>>,
}

impl Log {
    pub(crate) fn cluster(deliveries: Arc<Deliveries>) -> Self {
        Self::Cluster(Box::new(OnCluster {
            reader: tokio::sync::Mutex::new(deliveries.reader()),
            deliveries,
            place: Mutex::new(None),
        }))
    }

    /// The mark of the URL a `410` disabled, if any.
    pub(crate) async fn disabled(&self, e: &WebhookEntry) -> Option<u64> {
        match self {
            Self::Store(d) => d.store.mark(&e.disabled_key()).ok().flatten(),
            Self::Cluster(c) => c.deliveries.disabled(&e.name).await.ok().flatten(),
        }
    }

    pub(crate) async fn disable(&self, e: &WebhookEntry) {
        let mark = e.url_mark();
        let _ = match self {
            Self::Store(d) => d
                .store
                .set_mark(&e.disabled_key(), mark)
                .map_err(|e| e.into()),
            Self::Cluster(c) => c.deliveries.disable(&e.name, mark).await,
        };
    }

    /// Where delivery starts: the place kept, or (an endpoint new to the
    /// log) the log's end. In a cluster, waits until this node holds the
    /// endpoint (`None`: closing first).
    pub(crate) async fn begin(
        &self,
        e: &WebhookEntry,
        closing: &mut watch::Receiver<bool>,
    ) -> anyhow::Result<Option<u64>> {
        match self {
            Self::Store(d) => Ok(Some(match d.store.mark(&e.cursor_key())? {
                Some(c) => c,
                None => {
                    let c = d.store.next_event_id()?;
                    d.store.set_mark(&e.cursor_key(), c)?;
                    c
                }
            })),
            Self::Cluster(c) => {
                while !c.deliveries.holds(&e.name) {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = closing.wait_for(|c| *c) => return Ok(None),
                    }
                }
                let taken = c.deliveries.take_place(&e.name).await?;
                *c.place.lock().unwrap_or_else(|p| p.into_inner()) = Some(taken);
                Ok(Some(taken.next))
            }
        }
    }

    /// Whether this node may deliver the endpoint now.
    pub(crate) fn holds(&self, e: &WebhookEntry) -> bool {
        match self {
            Self::Store(_) => true,
            Self::Cluster(c) => c.deliveries.holds(&e.name),
        }
    }

    /// The id the next event will have.
    pub(crate) async fn end(&self) -> Option<u64> {
        match self {
            Self::Store(d) => d.store.next_event_id().ok(),
            Self::Cluster(c) => c.deliveries.end().await.ok(),
        }
    }

    /// Up to `max` events `filter` passes, from id `from` on (below
    /// `until` on a single node): they go in `out`; returns the id after
    /// the last one looked at.
    pub(crate) async fn read(
        &self,
        from: u64,
        until: u64,
        filter: &EventFilter,
        max: usize,
        out: &mut Vec<(u64, Event, i64)>,
    ) -> anyhow::Result<u64> {
        match self {
            Self::Store(d) => {
                let (d, filter) = (d.clone(), filter.clone());
                let mut got = std::mem::take(out);
                let (r, got, scanned) = tokio::task::spawn_blocking(move || {
                    let mut scan = from;
                    let r = d
                        .store
                        .read_events_stored(&mut scan, until, &filter, max, &mut got);
                    (r, got, scan)
                })
                .await?;
                *out = got;
                r.map(|_missing| scanned)
            }
            Self::Cluster(c) => {
                let read = c
                    .reader
                    .lock()
                    .await
                    .read(from, max, READ_WAIT, out)
                    .await?;
                out.retain(|(_, e, _)| filter.matches(e));
                Ok(read.next)
            }
        }
    }

    /// Keeps `cursor` as the endpoint's place. `Err`: another node took it.
    pub(crate) async fn save(&self, e: &WebhookEntry, cursor: u64) -> Result<(), Deposed> {
        match self {
            Self::Store(d) => {
                let _ = d.store.set_mark(&e.cursor_key(), cursor);
                Ok(())
            }
            Self::Cluster(c) => {
                let held = *c.place.lock().unwrap_or_else(|p| p.into_inner());
                let Some(mut held) = held else {
                    return Err(Deposed);
                };
                if held.next == cursor {
                    return Ok(());
                }
                match c.deliveries.save_place(&e.name, &mut held, cursor).await {
                    Ok(()) => {
                        *c.place.lock().unwrap_or_else(|p| p.into_inner()) = Some(held);
                        Ok(())
                    }
                    Err(SaveError::Deposed) => {
                        *c.place.lock().unwrap_or_else(|p| p.into_inner()) = None;
                        Err(Deposed)
                    }
                    // Saved with a later batch; a crash before then repeats
                    // more, never skips.
                    Err(SaveError::Unreachable(why)) => {
                        tracing::warn!(endpoint = %e.name, error = %why, "webhook place not saved");
                        Ok(())
                    }
                }
            }
        }
    }
}
