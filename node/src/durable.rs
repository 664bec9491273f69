//! The server's durability: on start, the engine is brought back from the
//! latest readable checkpoint plus the journal's commands after it; while
//! running, events are persisted before subscribers see them and the engine
//! is checkpointed periodically; on shutdown, the last events are persisted
//! and a final checkpoint written.
//!
//! Checkpoint files live beside the store: `checkpoint.lmck` (the latest)
//! and `checkpoint.prev.lmck` (the one before, the fallback should the
//! latest be unreadable). A new one is written to a temporary file, synced,
//! then renamed over, so a crash mid-write leaves both intact. The journal
//! keeps every command after the older of the two.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use anyhow::Context;
use lastmile_engine::fleet::{Checkpoint, Engine, Journal, PathPiece, VehicleId, path_history};

use crate::auth::{Auth, epoch_ms};
use crate::store::Store;

const LATEST: &str = "checkpoint.lmck";
const PREVIOUS: &str = "checkpoint.prev.lmck";
const WRITING: &str = "checkpoint.tmp";

/// What the start-up recovery found and did.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// The checkpoint restored, if any, and what it held.
    pub checkpoint: Option<PathBuf>,
    pub vehicles: usize,
    pub stops: usize,
    /// Checkpoints that could not be used, with why.
    pub rejected: Vec<String>,
    /// Journal entries replayed after the checkpoint, and commands skipped.
    pub replayed: usize,
    pub skipped: usize,
    /// The journal no longer holds every command after the checkpoint (both
    /// checkpoints lost): routes may be missing.
    pub journal_gap: bool,
    pub tracking_tokens: usize,
    /// Event time the restored engine had reached (NaN: nothing restored).
    pub event_time: f64,
    pub millis: f64,
}

/// Figures of one checkpoint written.
#[derive(Clone, Copy, Debug, Default)]
pub struct Written {
    pub bytes: u64,
    pub vehicles: usize,
    /// Time to stream it from the shards to the file (each shard's pings
    /// wait while its vehicles are saved), and in all (with the fsync).
    pub streamed_ms: f64,
    pub total_ms: f64,
}

/// Matched path pieces waiting to be written, per vehicle, merged where
/// one continues the previous on the same edge (a 1 Hz drive gives a piece
/// per ping; the history keeps one per edge driven).
#[derive(Default)]
struct HistoryBuffer {
    by_vehicle: std::collections::HashMap<VehicleId, Vec<PathPiece>>,
    pieces: usize,
    since: Option<Instant>,
}

/// Pieces buffered before a write is forced whatever the time.
const HISTORY_BUFFER_PIECES: usize = 1 << 20;
/// Wall time a piece may wait in the buffer.
const HISTORY_FLUSH_S: u64 = 30;

impl HistoryBuffer {
    fn add(&mut self, pieces: &[PathPiece]) {
        for p in pieces {
            let v = self.by_vehicle.entry(p.vehicle).or_default();
            match v.last_mut() {
                Some(last) if path_history::continues(last, p) => {
                    last.to_m = p.to_m;
                    last.t_end = p.t_end;
                }
                _ => {
                    v.push(*p);
                    self.pieces += 1;
                }
            }
        }
        if !pieces.is_empty() && self.since.is_none() {
            self.since = Some(Instant::now());
        }
    }

    fn due(&self) -> bool {
        self.pieces >= HISTORY_BUFFER_PIECES
            || self
                .since
                .is_some_and(|t| t.elapsed().as_secs() >= HISTORY_FLUSH_S)
    }

    fn take(&mut self) -> Vec<(VehicleId, Vec<PathPiece>)> {
        self.pieces = 0;
        self.since = None;
        self.by_vehicle.drain().collect()
    }
}

/// The durability state the server's threads share.
pub struct Durable {
    pub store: Arc<Store>,
    dir: PathBuf,
    /// Next event id to persist (the persister's cursor into the bus).
    persisted: Mutex<u64>,
    /// Journal sequence numbers of the latest and previous checkpoints.
    covered: Mutex<(u64, u64)>,
    /// Serialises checkpoint writers (the periodic thread and shutdown).
    writing: Mutex<()>,
    pub events_persisted: AtomicU64,
    /// Events that left the bus's ring before they could be persisted.
    pub events_unpersisted: AtomicU64,
    pub store_failures: AtomicU64,
    pub checkpoints_written: AtomicU64,
    pub checkpoint_failures: AtomicU64,
    pub last_checkpoint: Mutex<Written>,
    history: Mutex<HistoryBuffer>,
    pub history_pieces_written: AtomicU64,
}

fn read_checkpoint(path: &Path) -> anyhow::Result<Checkpoint> {
    // Read once and restored from where it lies: the file is the only copy.
    let bytes = std::fs::read(path)?;
    Ok(Checkpoint::from_file(bytes)?)
}

impl Durable {
    /// Opens the store in `dir`, restores `engine` (checkpoint, then the
    /// journal after it), continues the event ids where they stopped, holds
    /// events until persisted, and journals every command from now on.
    /// Tracking tokens still valid are given back to `auth`.
    pub fn recover(
        dir: &Path,
        engine: &Engine,
        auth: &Auth,
    ) -> anyhow::Result<(Arc<Durable>, Recovery)> {
        let started = Instant::now();
        let store = Arc::new(Store::open(dir)?);
        let mut rec = Recovery {
            event_time: f64::NAN,
            ..Recovery::default()
        };
        let mut base_seq = 0;
        let mut covered = (0, 0);
        for name in [LATEST, PREVIOUS] {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            let ckpt = match read_checkpoint(&path) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "checkpoint unreadable");
                    rec.rejected.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            let seq = ckpt.journal_seq();
            match engine.restore(ckpt) {
                Ok(r) => {
                    rec.vehicles = r.vehicles;
                    rec.event_time = r.event_time;
                    rec.stops = r.stops;
                    if !r.failed.is_empty() {
                        rec.rejected.push(format!(
                            "{}: {} vehicles not restored ({})",
                            path.display(),
                            r.failed.len(),
                            r.failed[0]
                        ));
                    }
                    rec.checkpoint = Some(path);
                    base_seq = seq;
                    covered = (seq, seq);
                    break;
                }
                Err(e) => {
                    tracing::error!(path = %path.display(), error = %e, "checkpoint refused");
                    rec.rejected.push(format!("{}: {e}", path.display()));
                }
            }
        }
        let entries = store.journal_after(base_seq)?;
        rec.journal_gap = match (store.journal_first()?, entries.first()) {
            (Some(first), _) => first > base_seq + 1 && base_seq < store.journal_seq()?,
            (None, _) => store.journal_seq()? > base_seq,
        };
        for (_, time, cmds) in &entries {
            rec.skipped += engine.replay(cmds, *time);
        }
        rec.replayed = entries.len();
        engine.set_journal_seq(store.journal_seq()?);
        engine.sync();
        let bus = engine.events();
        let next_event = store.next_event_id()?;
        bus.resume_at(next_event);
        bus.hold_until_durable();
        engine.set_journal(store.clone());
        let now = epoch_ms(SystemTime::now());
        for g in store.load_grants(now)? {
            if auth.restore_tracking(&g) {
                rec.tracking_tokens += 1;
            }
        }
        rec.millis = started.elapsed().as_secs_f64() * 1e3;
        let durable = Arc::new(Durable {
            store,
            dir: dir.to_path_buf(),
            persisted: Mutex::new(next_event),
            covered: Mutex::new(covered),
            writing: Mutex::new(()),
            events_persisted: 0.into(),
            events_unpersisted: 0.into(),
            store_failures: 0.into(),
            checkpoints_written: 0.into(),
            checkpoint_failures: 0.into(),
            last_checkpoint: Mutex::new(Written::default()),
            history: Mutex::new(HistoryBuffer::default()),
            history_pieces_written: 0.into(),
        });
        Ok((durable, rec))
    }

    /// Persists the events published since the last call and lets
    /// subscribers see them; returns how many were persisted.
    pub fn persist_events(&self, engine: &Engine) -> usize {
        let bus = engine.events();
        let mut cursor = self.persisted.lock().unwrap_or_else(|p| p.into_inner());
        let mut total = 0;
        let mut batch = Vec::new();
        loop {
            batch.clear();
            let mut next = *cursor;
            let report = bus.read_pending(&mut next, 8192, &mut batch);
            self.events_unpersisted.fetch_add(report.lost, Relaxed);
            if batch.is_empty() {
                *cursor = next;
                bus.mark_durable(next);
                return total;
            }
            match self
                .store
                .append_events(&batch, epoch_ms(SystemTime::now()))
            {
                Ok(()) => {
                    *cursor = next;
                    bus.mark_durable(next);
                    total += batch.len();
                    self.events_persisted.fetch_add(batch.len() as u64, Relaxed);
                }
                Err(e) => {
                    // Held back, retried at the next call.
                    self.store_failures.fetch_add(1, Relaxed);
                    tracing::error!(error = %e, "persisting events failed");
                    return total;
                }
            }
        }
    }

    /// Takes the engine's finalised path pieces into the buffer, and writes
    /// the buffer when due (or when `force`).
    pub fn gather_history(&self, engine: &Engine, force: bool) {
        let chunks = {
            // Taken under the buffer's lock, so two callers cannot add a
            // vehicle's pieces out of order.
            let mut buf = self.history.lock().unwrap_or_else(|p| p.into_inner());
            let mut pieces = Vec::new();
            engine.take_history(&mut pieces);
            buf.add(&pieces);
            if !(force || buf.due()) {
                return;
            }
            buf.take()
        };
        let n: usize = chunks.iter().map(|(_, p)| p.len()).sum();
        match self.store.append_history(&chunks) {
            Ok(()) => {
                self.history_pieces_written.fetch_add(n as u64, Relaxed);
            }
            Err(e) => {
                self.store_failures.fetch_add(1, Relaxed);
                tracing::error!(error = %e, pieces = n, "writing history failed");
            }
        }
    }

    /// Drops history that ended before `before` (event time); returns how many chunks.
    pub fn expire_history(&self, before: f64) -> u64 {
        match self.store.expire_history(before) {
            Ok(n) => n,
            Err(e) => {
                self.store_failures.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "expiring history failed");
                0
            }
        }
    }

    /// Drops events older than the retention; returns how many.
    pub fn expire_events(&self, retention_s: f64) -> u64 {
        let cutoff = epoch_ms(SystemTime::now()) - (retention_s * 1e3) as i64;
        match self.store.expire_events(cutoff) {
            Ok(n) => n,
            Err(e) => {
                self.store_failures.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "expiring events failed");
                0
            }
        }
    }

    /// Writes a checkpoint of `engine`, keeps the one before as the
    /// fallback, and drops the journal entries both cover.
    pub fn checkpoint(&self, engine: &Engine) -> anyhow::Result<Written> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        let result = self.write_checkpoint(engine, started);
        match &result {
            Ok(w) => {
                self.checkpoints_written.fetch_add(1, Relaxed);
                *self
                    .last_checkpoint
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = *w;
            }
            Err(e) => {
                self.checkpoint_failures.fetch_add(1, Relaxed);
                tracing::error!(error = %e, "checkpoint failed");
            }
        }
        result
    }

    fn write_checkpoint(&self, engine: &Engine, started: Instant) -> anyhow::Result<Written> {
        let tmp = self.dir.join(WRITING);
        let file = std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let saved = engine
            .write_checkpoint(&mut w)
            .with_context(|| format!("writing {}", tmp.display()))?;
        if saved.failed > 0 {
            tracing::error!(
                vehicles = saved.failed,
                "vehicles could not be serialised and are missing from the checkpoint"
            );
        }
        w.flush()?;
        let streamed_ms = started.elapsed().as_secs_f64() * 1e3;
        w.get_ref().sync_all()?;
        drop(w);
        // The checkpoint includes every command journalled so far, some
        // perhaps still waiting for their flush: they must be on disk before
        // it becomes the one a restart reads, or it would run ahead of the
        // journal.
        self.store
            .sync(saved.journal_seq)
            .map_err(|e| anyhow::anyhow!("the journal failed: {e}"))?;
        let (latest, previous) = (self.dir.join(LATEST), self.dir.join(PREVIOUS));
        if latest.exists() {
            std::fs::rename(&latest, &previous)?;
        }
        std::fs::rename(&tmp, &latest)?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        let seq = saved.journal_seq;
        let older = {
            let mut c = self.covered.lock().unwrap_or_else(|p| p.into_inner());
            *c = (seq, c.0);
            c.1
        };
        if older > 0 {
            self.store.truncate_journal(older)?;
        }
        Ok(Written {
            bytes: saved.bytes,
            vehicles: saved.vehicles,
            streamed_ms,
            total_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }
}
