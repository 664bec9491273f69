//! The durable store (`DATA_DIR/lastmile.redb`, redb: pure Rust, ACID,
//! copy-on-write B-trees with a checksummed commit): everything a client was
//! told is accepted survives a crash.
//!
//! - `journal`: every accepted route/stop command, in order (the engine's
//!   [`Journal`]); with the latest checkpoint it rebuilds routes and stops.
//!   Entries are dropped once two checkpoints cover them.
//! - `stop_outcomes`: each completed or failed stop with its proof of
//!   delivery or reason, kept as the business record (the engine forgets
//!   closed stops after a day).
//! - `stop_ratings`: customers' ratings of completed stops (stars and
//!   comment), beside their outcomes, written with the command that gave
//!   them.
//! - `events`: the event log by id, kept `event_retention_s`, read back by a
//!   subscriber resuming from the last id it saw.
//! - `tracking_tokens`: minted tracking tokens (SHA-256 digests only), so a
//!   customer's link survives a restart.
//! - `history`: each vehicle's finalised matched path, in chunks by vehicle
//!   and time.
//!
//! Every write is one transaction committed with `Durability::Immediate`
//! (fsync), except the history, which may lose its last seconds to a crash
//! like the pings it comes from; journal entries arriving together share
//! one (group commit, [`journal`]). Commit times are recorded for the
//! metrics.

mod journal;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use anyhow::Context;
use lastmile_engine::fleet::path_history::{decode_chunk, encode_chunk};
use lastmile_engine::fleet::{
    Command, Event, EventFilter, EventKind, Histogram, PathPiece, Rating, StopId, StopOutcome,
    StopPlan, VehicleId,
};
use lastmile_roadgraph::LatLon;

use crate::ids::NewName;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use rkyv::rancor;
use rkyv::util::AlignedVec;

const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
const OUTCOMES: TableDefinition<u64, &[u8]> = TableDefinition::new("stop_outcomes");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const RATINGS: TableDefinition<u64, &[u8]> = TableDefinition::new("stop_ratings");
const GRANTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tracking_tokens");
const HISTORY: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("history");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Names fleets gave their vehicles and stops: (kind, engine id) → name.
const NAMES: TableDefinition<(u8, u64), &str> = TableDefinition::new("names");

/// `meta` key: the last journal sequence number handed out (survives truncation).
const JOURNAL_SEQ: &str = "journal_seq";

/// One journal entry: commands applied as a unit at one event time.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Entry {
    time: f64,
    commands: Vec<Command>,
}

/// A closed stop as the store keeps it: the business record, answered
/// from here once the engine has forgotten the stop.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OutcomeRecord {
    pub vehicle: VehicleId,
    pub stop: StopId,
    /// Event time it was closed.
    pub time: f64,
    pub outcome: StopOutcome,
    /// What was planned (position, window, service time, customer).
    pub plan: Option<StopPlan>,
}

/// The first layout of [`OutcomeRecord`], without the plan (still read).
#[derive(rkyv::Archive, rkyv::Deserialize)]
struct OutcomeRecordV1 {
    vehicle: VehicleId,
    stop: StopId,
    time: f64,
    outcome: StopOutcome,
}

/// A minted tracking token as stored (the token itself is never stored).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredGrant {
    pub digest: [u8; 32],
    /// The issuer's fleet by name; `None` for an admin's grant.
    pub fleet: Option<String>,
    pub stop: StopId,
    pub expires_ms: i64,
}

/// Bytes of one stored event: the event and when it was stored.
const EVENT_BYTES: usize = 80;

pub struct Store {
    db: Database,
    path: PathBuf,
    /// Commit latency of durable writes.
    commits: Mutex<Histogram>,
    group: journal::GroupCommit,
    /// Journal units committed, and the flushes that committed them.
    journal_units: AtomicU64,
    journal_flushes: AtomicU64,
    /// Fleets' new names waiting for the next journal commit to carry them
    /// ([`Store::queue_names`]).
    names_waiting: Mutex<Vec<NewName>>,
}

fn aligned(bytes: &[u8]) -> AlignedVec {
    let mut v = AlignedVec::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    v
}

impl Store {
    /// Opens (or creates) the store in `dir`. A store left by a crash is
    /// recovered by redb on open (its last committed transaction stands).
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("lastmile.redb");
        let db = Database::create(&path).with_context(|| format!("opening {}", path.display()))?;
        let txn = db.begin_write()?;
        for t in [JOURNAL, OUTCOMES, EVENTS, RATINGS] {
            txn.open_table(t)?;
        }
        txn.open_table(GRANTS)?;
        txn.open_table(HISTORY)?;
        txn.open_table(META)?;
        txn.open_table(NAMES)?;
        txn.commit()?;
        let last = {
            let txn = db.begin_read()?;
            let meta = txn.open_table(META)?;
            meta.get(JOURNAL_SEQ)?.map_or(0, |v| v.value())
        };
        Ok(Self {
            db,
            path,
            commits: Mutex::new(Histogram::default()),
            group: journal::GroupCommit::new(last),
            journal_units: 0.into(),
            journal_flushes: 0.into(),
            names_waiting: Mutex::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Journal units committed and the flushes that committed them (their
    /// ratio: how many commands one flush served on average).
    pub fn journal_flushes(&self) -> (u64, u64) {
        (
            self.journal_units.load(Relaxed),
            self.journal_flushes.load(Relaxed),
        )
    }

    fn note_flush(&self, units: usize) {
        self.journal_units.fetch_add(units as u64, Relaxed);
        self.journal_flushes.fetch_add(1, Relaxed);
    }

    /// Why the store refuses commands, if a journal commit failed.
    pub fn failure(&self) -> Option<String> {
        self.group.failed()
    }

    /// A copy of the commit-latency histogram.
    pub fn commit_latency(&self) -> Histogram {
        self.commits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs `f` in one write transaction and commits it with the given
    /// durability, timing the whole.
    fn write<R>(
        &self,
        durability: Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<R, redb::Error>,
    ) -> Result<R, redb::Error> {
        let started = Instant::now();
        let immediate = matches!(durability, Durability::Immediate);
        let mut txn = self.db.begin_write()?;
        txn.set_durability(durability)
            .map_err(|e| redb::Error::from(redb::StorageError::Io(std::io::Error::other(e))))?;
        let r = f(&txn)?;
        txn.commit()?;
        if immediate {
            self.commits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .record(started.elapsed());
        }
        Ok(r)
    }

    // ---------------------------------------------------------------- journal

    /// Journal entries after `seq`, in order, as `(seq, time, commands)`.
    pub fn journal_after(&self, seq: u64) -> anyhow::Result<Vec<(u64, f64, Vec<Command>)>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOURNAL)?;
        let mut out = Vec::new();
        for row in table.range(seq.saturating_add(1)..)? {
            let (k, v) = row?;
            let entry = rkyv::from_bytes::<Entry, rancor::Error>(&aligned(v.value()))
                .with_context(|| format!("journal entry {} is damaged", k.value()))?;
            out.push((k.value(), entry.time, entry.commands));
        }
        Ok(out)
    }

    /// The first journal sequence number still held (None when empty).
    pub fn journal_first(&self) -> anyhow::Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(JOURNAL)?;
        Ok(table.first()?.map(|(k, _)| k.value()))
    }

    /// The last journal sequence number on disk (0: none yet).
    pub fn journal_seq(&self) -> anyhow::Result<u64> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(JOURNAL_SEQ)?.map_or(0, |v| v.value()))
    }

    /// Drops journal entries up to `seq` (covered by a checkpoint kept as
    /// the fallback); returns how many.
    pub fn truncate_journal(&self, seq: u64) -> anyhow::Result<u64> {
        Ok(self.write(Durability::Immediate, |txn| {
            let mut t = txn.open_table(JOURNAL)?;
            let mut n = 0;
            t.retain_in(..=seq, |_, _| {
                n += 1;
                false
            })?;
            Ok(n)
        })?)
    }

    /// A closed stop's record.
    pub fn outcome(&self, stop: StopId) -> anyhow::Result<Option<OutcomeRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(OUTCOMES)?;
        let Some(v) = table.get(stop)? else {
            return Ok(None);
        };
        let bytes = aligned(v.value());
        if let Ok(r) = rkyv::from_bytes::<OutcomeRecord, rancor::Error>(&bytes) {
            return Ok(Some(r));
        }
        let r = rkyv::from_bytes::<OutcomeRecordV1, rancor::Error>(&bytes)
            .with_context(|| format!("outcome of stop {stop} is damaged"))?;
        Ok(Some(OutcomeRecord {
            vehicle: r.vehicle,
            stop: r.stop,
            time: r.time,
            outcome: r.outcome,
            plan: None,
        }))
    }

    /// A completed stop's rating, once given.
    pub fn rating(&self, stop: StopId) -> anyhow::Result<Option<Rating>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(RATINGS)?;
        let Some(v) = table.get(stop)? else {
            return Ok(None);
        };
        let r = rkyv::from_bytes::<Rating, rancor::Error>(&aligned(v.value()))
            .with_context(|| format!("rating of stop {stop} is damaged"))?;
        Ok(Some(r))
    }

    // ----------------------------------------------------------------- events

    /// Appends published events (ids increasing) stored at `now_ms`.
    pub fn append_events(&self, events: &[(u64, Event)], now_ms: i64) -> Result<(), redb::Error> {
        if events.is_empty() {
            return Ok(());
        }
        self.write(Durability::Immediate, |txn| {
            let mut t = txn.open_table(EVENTS)?;
            for (id, e) in events {
                t.insert(*id, &encode_event(e, now_ms)[..])?;
            }
            Ok(())
        })
    }

    /// The id after the last stored event (where the bus continues).
    pub fn next_event_id(&self) -> anyhow::Result<u64> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(EVENTS)?;
        Ok(t.last()?.map_or(0, |(k, _)| k.value() + 1))
    }

    /// The oldest stored event's id (None when the log is empty).
    pub fn first_event_id(&self) -> anyhow::Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(EVENTS)?;
        Ok(t.first()?.map(|(k, _)| k.value()))
    }

    /// Reads stored events from `*cursor` on, below `until`, that match
    /// `filter`, at most `max`; moves the cursor past what it examined.
    pub fn read_events(
        &self,
        cursor: &mut u64,
        until: u64,
        filter: &EventFilter,
        max: usize,
        out: &mut Vec<(u64, Event)>,
    ) -> anyhow::Result<u64> {
        self.scan_events(cursor, until, filter, max, |id, e, _| out.push((id, e)))
    }

    /// As [`read_events`](Self::read_events), with the wall-clock time
    /// each event was stored at (ms since the epoch).
    pub fn read_events_stored(
        &self,
        cursor: &mut u64,
        until: u64,
        filter: &EventFilter,
        max: usize,
        out: &mut Vec<(u64, Event, i64)>,
    ) -> anyhow::Result<u64> {
        self.scan_events(cursor, until, filter, max, |id, e, ms| {
            out.push((id, e, ms))
        })
    }

    /// Returns how many ids the scan passed that the log does not hold
    /// (events the server could not persist: a reader reports them lost).
    fn scan_events(
        &self,
        cursor: &mut u64,
        until: u64,
        filter: &EventFilter,
        max: usize,
        mut push: impl FnMut(u64, Event, i64),
    ) -> anyhow::Result<u64> {
        if *cursor >= until {
            return Ok(0);
        }
        let txn = self.db.begin_read()?;
        let t = txn.open_table(EVENTS)?;
        let (mut read, mut missing) = (0, 0);
        for row in t.range(*cursor..until)? {
            let (k, v) = row?;
            missing += k.value() - *cursor;
            *cursor = k.value() + 1;
            if let Some((e, stored_ms)) = decode_event(v.value())
                && filter.matches(&e)
            {
                push(k.value(), e, stored_ms);
                read += 1;
                if read == max {
                    return Ok(missing);
                }
            }
        }
        missing += until - *cursor;
        *cursor = until;
        Ok(missing)
    }

    /// Drops events stored before `before_ms`; returns how many.
    pub fn expire_events(&self, before_ms: i64) -> Result<u64, redb::Error> {
        self.write(Durability::Immediate, |txn| {
            let mut t = txn.open_table(EVENTS)?;
            let mut expired = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                match decode_event(v.value()) {
                    Some((_, stored)) if stored < before_ms => expired.push(k.value()),
                    _ => break,
                }
                if expired.len() >= 100_000 {
                    break;
                }
            }
            for k in &expired {
                t.remove(*k)?;
            }
            Ok(expired.len() as u64)
        })
    }

    /// Makes every write so far durable, those committed without a sync
    /// (history) included: redb persists them only with a later synced
    /// commit, and a clean shutdown must not leave them to chance.
    pub fn flush(&self) -> Result<(), redb::Error> {
        self.write(Durability::Immediate, |txn| self.write_waiting_names(txn))
    }

    // ------------------------------------------------------------------ marks

    /// A number kept under `key` (webhook cursors and the like).
    pub fn mark(&self, key: &str) -> anyhow::Result<Option<u64>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(META)?;
        Ok(t.get(key)?.map(|v| v.value()))
    }

    /// Keeps `value` under `key`, synced.
    pub fn set_mark(&self, key: &str, value: u64) -> Result<(), redb::Error> {
        self.write(Durability::Immediate, |txn| {
            txn.open_table(META)?.insert(key, value)?;
            Ok(())
        })
    }

    // ---------------------------------------------------------------- history

    /// Writes each vehicle's pieces (in time order) as one chunk. Not synced
    /// on its own: the next durable commit (events, commands) carries it,
    /// and a crash may lose the last seconds, like the pings they came from.
    pub fn append_history(
        &self,
        chunks: &[(VehicleId, Vec<PathPiece>)],
    ) -> Result<(), redb::Error> {
        if chunks.is_empty() {
            return Ok(());
        }
        self.write(Durability::None, |txn| {
            let mut t = txn.open_table(HISTORY)?;
            for (vehicle, pieces) in chunks {
                let Some(last) = pieces.last() else { continue };
                let key = (*vehicle, (last.t_end * 1e3).round() as i64);
                // Two chunks ending at the same millisecond become one.
                let merged;
                let pieces = match t.get(key)? {
                    Some(old) => {
                        let mut all = decode_chunk(*vehicle, old.value());
                        all.extend_from_slice(pieces);
                        all.sort_by(|a, b| a.t_start.total_cmp(&b.t_start));
                        merged = all;
                        &merged
                    }
                    None => pieces,
                };
                t.insert(key, &encode_chunk(pieces)[..])?;
            }
            Ok(())
        })
    }

    /// Writes `pieces` (one vehicle's, in time order) of a stretch of its
    /// path that arrived late, inside a gap its path has: into the chunk
    /// whose span holds them, so that chunks stay in time order when read
    /// by their ends, or as a chunk of their own.
    pub fn insert_history(
        &self,
        vehicle: VehicleId,
        pieces: &[PathPiece],
    ) -> Result<(), redb::Error> {
        let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
            return Ok(());
        };
        let start = (first.t_start * 1e3).round() as i64;
        let end_key = (last.t_end * 1e3).round() as i64;
        self.write(Durability::None, |txn| {
            let mut t = txn.open_table(HISTORY)?;
            // The first chunk ending after the stretch starts spans it if
            // it also starts before the stretch ends.
            let spanning = match t.range((vehicle, start)..=(vehicle, i64::MAX))?.next() {
                Some(row) => {
                    let (k, v) = row?;
                    let chunk = decode_chunk(vehicle, v.value());
                    let spans = chunk.first().is_some_and(|p| p.t_start < last.t_end);
                    spans.then(|| (k.value(), chunk))
                }
                None => None,
            };
            match spanning {
                Some((key, mut chunk)) => {
                    chunk.extend_from_slice(pieces);
                    chunk.sort_by(|a, b| a.t_start.total_cmp(&b.t_start));
                    t.insert(key, &encode_chunk(&chunk)[..])?;
                }
                None => {
                    let key = (vehicle, end_key);
                    let mut chunk = match t.get(key)? {
                        Some(old) => decode_chunk(vehicle, old.value()),
                        None => Vec::new(),
                    };
                    chunk.extend_from_slice(pieces);
                    chunk.sort_by(|a, b| a.t_start.total_cmp(&b.t_start));
                    t.insert(key, &encode_chunk(&chunk)[..])?;
                }
            }
            Ok(())
        })
    }

    /// A vehicle's path pieces overlapping `[from, to]` (event time, s), in
    /// time order, after the last piece that ended before `from` (its
    /// predecessor, for joining), at most `max` (then `true`: more remain).
    pub fn history(
        &self,
        vehicle: VehicleId,
        from: f64,
        to: f64,
        max: usize,
        out: &mut Vec<PathPiece>,
    ) -> anyhow::Result<bool> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(HISTORY)?;
        // Chunks are keyed by their end: the first one that can overlap is
        // the first ending at or after `from`.
        let lo = ((from * 1e3).floor() as i64).max(i64::MIN + 1);
        // The last piece that ended before the window comes first: whether
        // the window's first piece continues it (no break), and where the
        // path was when the window opens, depend on it.
        let mut before: Option<PathPiece> =
            match t.range((vehicle, i64::MIN)..(vehicle, lo))?.next_back() {
                Some(row) => decode_chunk(vehicle, row?.1.value()).pop(),
                None => None,
            };
        let mut started = false;
        for row in t.range((vehicle, lo)..=(vehicle, i64::MAX))? {
            let (_, v) = row?;
            let chunk = decode_chunk(vehicle, v.value());
            if chunk.first().is_some_and(|p| p.t_start > to) {
                break;
            }
            for p in chunk {
                if p.t_end < from {
                    before = Some(p);
                    continue;
                }
                if p.t_start > to {
                    break;
                }
                if !started {
                    started = true;
                    out.extend(before.take());
                }
                if out.len() == max {
                    return Ok(true);
                }
                out.push(p);
            }
        }
        Ok(false)
    }

    /// Drops history chunks that ended before `before` (event time, s);
    /// returns how many.
    pub fn expire_history(&self, before: f64) -> Result<u64, redb::Error> {
        let cutoff = (before * 1e3) as i64;
        self.write(Durability::Immediate, |txn| {
            let mut t = txn.open_table(HISTORY)?;
            let mut n = 0;
            t.retain(|(_, end), _| {
                let keep = end >= cutoff;
                n += u64::from(!keep);
                keep
            })?;
            Ok(n)
        })
    }

    // ------------------------------------------------------------------ names

    /// Writes names allocated to fleets' ids now, synced (with any names
    /// waiting for a journal commit).
    pub fn save_names(&self, names: &[NewName]) -> Result<(), redb::Error> {
        self.write(Durability::Immediate, |txn| {
            let mut t = txn.open_table(NAMES)?;
            for n in names {
                t.insert((n.kind as u8, n.id), &*n.name)?;
            }
            drop(t);
            self.write_waiting_names(txn)
        })
    }

    /// Leaves names for the next journal commit to write in its own
    /// transaction (the command that needs them follows): planning a route
    /// under new names then costs no write of its own. Should that command
    /// be refused, the names go with the next commit of any kind; nothing
    /// durable names them meanwhile.
    pub fn queue_names(&self, names: &[NewName]) {
        self.names_waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(names);
    }

    /// Writes the names waiting for a commit into `txn`.
    pub(crate) fn write_waiting_names(
        &self,
        txn: &redb::WriteTransaction,
    ) -> Result<(), redb::Error> {
        let waiting =
            std::mem::take(&mut *self.names_waiting.lock().unwrap_or_else(|p| p.into_inner()));
        if waiting.is_empty() {
            return Ok(());
        }
        let mut t = txn.open_table(NAMES)?;
        for n in &waiting {
            t.insert((n.kind as u8, n.id), &*n.name)?;
        }
        Ok(())
    }

    /// Every name kept, into `ids`; returns how many.
    pub fn load_names(&self, ids: &crate::ids::Ids) -> anyhow::Result<usize> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(NAMES)?;
        let mut n = 0;
        for row in t.iter()? {
            let (k, v) = row?;
            let (kind, id) = k.value();
            if let Some(kind) = crate::ids::Kind::from_u8(kind) {
                ids.restore(kind, id, v.value());
                n += 1;
            }
        }
        Ok(n)
    }

    // --------------------------------------------------------- tracking tokens

    /// Keeps tracking grants, all in one synced commit.
    pub fn save_grants(&self, grants: &[StoredGrant]) -> Result<(), redb::Error> {
        self.write(Durability::Immediate, |txn| {
            let mut t = txn.open_table(GRANTS)?;
            for g in grants {
                let mut v = Vec::with_capacity(16 + g.fleet.as_ref().map_or(0, String::len));
                v.extend_from_slice(&g.stop.to_le_bytes());
                v.extend_from_slice(&g.expires_ms.to_le_bytes());
                if let Some(f) = &g.fleet {
                    v.push(1);
                    v.extend_from_slice(f.as_bytes());
                }
                t.insert(&g.digest[..], &v[..])?;
            }
            Ok(())
        })
    }

    /// Tracking grants still valid at `now_ms` (expired ones are dropped).
    pub fn load_grants(&self, now_ms: i64) -> anyhow::Result<Vec<StoredGrant>> {
        let mut out = Vec::new();
        self.write(Durability::Immediate, |txn| {
            let mut t = txn.open_table(GRANTS)?;
            t.retain(|k, v| {
                let (Ok(digest), true) = (<[u8; 32]>::try_from(k), v.len() >= 16) else {
                    return false;
                };
                let stop = u64::from_le_bytes(v[..8].try_into().expect("8 bytes"));
                let expires_ms = i64::from_le_bytes(v[8..16].try_into().expect("8 bytes"));
                if expires_ms <= now_ms {
                    return false;
                }
                let fleet = (v.len() > 16).then(|| String::from_utf8_lossy(&v[17..]).into_owned());
                out.push(StoredGrant {
                    digest,
                    fleet,
                    stop,
                    expires_ms,
                });
                true
            })?;
            Ok(())
        })?;
        Ok(out)
    }
}

/// An event's kind and ETA window in one word: the kind in the low byte,
/// then the window's two halves in whole seconds plus one, 24 bits each
/// (about 194 days); 0 is no window, which is also how events written
/// before windows existed read.
fn kind_word(e: &Event) -> u64 {
    const MAX: u64 = 0xFF_FFFF;
    let field =
        |s: f32| (s.is_finite() && s >= 0.0).then(|| (f64::from(s).round() as u64 + 1).min(MAX));
    let [before, after] = e.window_s;
    let (before, after) = match (field(before), field(after)) {
        (Some(b), Some(a)) => (b, a),
        _ => (0, 0),
    };
    u64::from(e.kind as u8) | before << 8 | after << 32
}

fn window_of(word: u64) -> [f32; 2] {
    let (before, after) = ((word >> 8) & 0xFF_FFFF, (word >> 32) & 0xFF_FFFF);
    if before == 0 || after == 0 {
        Event::NO_WINDOW
    } else {
        [(before - 1) as f32, (after - 1) as f32]
    }
}

/// An event in 80 bytes: vehicle, seq, time, its stop or zone (u64::MAX:
/// none; a zone event has no stop), lat, lon, value, reference, kind and
/// window ([`kind_word`]), stored at (ms).
fn encode_event(e: &Event, stored_ms: i64) -> [u8; EVENT_BYTES] {
    let mut b = [0u8; EVENT_BYTES];
    let words: [u64; 10] = [
        e.vehicle,
        e.seq,
        e.time.to_bits(),
        e.stop.or(e.zone).unwrap_or(u64::MAX),
        e.pos.lat.to_bits(),
        e.pos.lon.to_bits(),
        e.value.to_bits(),
        e.reference.to_bits(),
        kind_word(e),
        stored_ms as u64,
    ];
    for (chunk, w) in b.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&w.to_le_bytes());
    }
    b
}

fn decode_event(b: &[u8]) -> Option<(Event, i64)> {
    if b.len() != EVENT_BYTES {
        return None;
    }
    let w = |i: usize| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().expect("8 bytes"));
    let f = |i: usize| f64::from_bits(w(i));
    let kind = EventKind::from_code((w(8) & 0xFF) as u8)?;
    let about = (w(3) != u64::MAX).then_some(w(3));
    let zone_event = kind.is_zone();
    Some((
        Event {
            vehicle: w(0),
            seq: w(1),
            time: f(2),
            kind,
            stop: about.filter(|_| !zone_event),
            zone: about.filter(|_| zone_event),
            pos: LatLon::new(f(4), f(5)),
            value: f(6),
            reference: f(7),
            window_s: window_of(w(8)),
        },
        w(9) as i64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_engine::fleet::{Journal, ProofOfDelivery, StopPlan};

    fn ev(vehicle: u64, seq: u64, kind: EventKind) -> Event {
        Event {
            vehicle,
            seq,
            time: 1000.0 + seq as f64,
            kind,
            stop: seq.is_multiple_of(2).then_some(seq),
            zone: None,
            pos: LatLon::new(43.7, 7.4),
            value: 1.5,
            reference: f64::NAN,
            window_s: Event::NO_WINDOW,
        }
    }

    #[test]
    fn a_zone_event_keeps_its_zone_and_a_stop_event_its_stop() {
        let mut e = ev(3, 1, EventKind::ZoneEntered);
        (e.stop, e.zone, e.reference) = (None, Some(77), 2.0);
        assert_eq!(decode_event(&encode_event(&e, 5)).unwrap(), (e, 5));
        let s = ev(3, 2, EventKind::Arrived);
        let back = decode_event(&encode_event(&s, 5)).unwrap().0;
        assert_eq!((back.stop, back.zone), (Some(2), None));
    }

    #[test]
    fn an_events_window_survives_the_log_and_old_events_have_none() {
        let mut e = ev(7, 3, EventKind::EtaChanged);
        e.window_s = [125.4, 610.0];
        let (back, stored) = decode_event(&encode_event(&e, 42)).unwrap();
        assert_eq!(
            (back.kind, back.window_s, stored),
            (e.kind, [125.0, 610.0], 42)
        );
        e.window_s = [0.0, 0.0];
        assert_eq!(
            decode_event(&encode_event(&e, 0)).unwrap().0.window_s,
            [0.0, 0.0]
        );
        // None, and events written before windows existed (kind alone).
        e.window_s = Event::NO_WINDOW;
        let none = decode_event(&encode_event(&e, 0)).unwrap().0;
        assert_eq!(none.window_s, Event::NO_WINDOW);
        let mut old = encode_event(&e, 0);
        old[64..72].copy_from_slice(&u64::from(EventKind::Late as u8).to_le_bytes());
        let old = decode_event(&old).unwrap().0;
        assert_eq!(old.kind, EventKind::Late);
        assert!(old.eta_window().is_none());
    }

    /// Appends and waits until durable, as the engine does.
    fn record(s: &Store, commands: &[Command], closed: &[StopPlan], time: f64) -> u64 {
        let seq = s.append(commands, closed, time).unwrap();
        s.sync(seq).unwrap();
        seq
    }

    #[test]
    fn journal_survives_reopening_and_truncation_keeps_the_sequence() {
        let dir = tempdir();
        let plan = StopPlan::new(7, LatLon::new(43.7, 7.42));
        {
            let s = Store::open(&dir).unwrap();
            let assign = Command::AssignRoute {
                vehicle: 3,
                stops: vec![plan.clone()],
            };
            assert_eq!(record(&s, std::slice::from_ref(&assign), &[], 10.0), 1);
            let done = Command::Complete {
                vehicle: 3,
                stop: 7,
                proof: ProofOfDelivery {
                    photo_refs: vec!["s3://pod/7.jpg".into()],
                    ..ProofOfDelivery::default()
                },
            };
            let closed = std::slice::from_ref(&plan);
            assert_eq!(record(&s, std::slice::from_ref(&done), closed, 20.0), 2);
        }
        let s = Store::open(&dir).unwrap();
        let j = s.journal_after(0).unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(j[0].1, 10.0);
        assert!(matches!(&j[0].2[0], Command::AssignRoute { stops, .. } if stops[0] == plan));
        let o = s.outcome(7).unwrap().unwrap();
        assert_eq!(o.time, 20.0);
        assert_eq!(
            o.plan.as_ref(),
            Some(&plan),
            "the outcome keeps what was planned"
        );
        assert!(
            matches!(&o.outcome, StopOutcome::Completed(p) if p.photo_refs == ["s3://pod/7.jpg"])
        );
        assert_eq!(s.truncate_journal(1).unwrap(), 1);
        assert_eq!(s.journal_first().unwrap(), Some(2));
        assert_eq!(s.journal_after(0).unwrap().len(), 1);
        // Numbers are never reused after a truncation.
        let fail = Command::Fail {
            vehicle: 3,
            stop: 8,
            reason: "nobody home".into(),
        };
        assert_eq!(record(&s, &[fail], &[], 30.0), 3);
        assert_eq!(s.journal_seq().unwrap(), 3);
    }

    #[test]
    fn outcomes_of_the_first_layout_are_still_read() {
        #[derive(rkyv::Archive, rkyv::Serialize)]
        struct V1 {
            vehicle: VehicleId,
            stop: StopId,
            time: f64,
            outcome: StopOutcome,
        }
        let dir = tempdir();
        let s = Store::open(&dir).unwrap();
        for stop in 0..50u64 {
            let old = V1 {
                vehicle: 9,
                stop,
                time: 5.0 + stop as f64,
                outcome: StopOutcome::Failed {
                    reason: "x".repeat(stop as usize),
                },
            };
            let b = rkyv::to_bytes::<rancor::Error>(&old).unwrap();
            s.write(Durability::Immediate, |txn| {
                txn.open_table(OUTCOMES)?.insert(stop, &b[..])?;
                Ok(())
            })
            .unwrap();
            let o = s.outcome(stop).unwrap().unwrap();
            assert_eq!(
                (o.vehicle, o.stop, o.time, o.plan),
                (9, stop, old.time, None)
            );
            assert_eq!(o.outcome, old.outcome);
        }
    }

    #[test]
    fn events_round_trip_filter_page_and_expire() {
        let dir = tempdir();
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.next_event_id().unwrap(), 0);
        let batch: Vec<(u64, Event)> = (0..10)
            .map(|i| (i, ev(i % 3, i, EventKind::ALL[i as usize % 15])))
            .collect();
        s.append_events(&batch[..6], 1_000).unwrap();
        s.append_events(&batch[6..], 2_000).unwrap();
        assert_eq!(s.next_event_id().unwrap(), 10);
        let (mut cursor, mut out) = (0, Vec::new());
        s.read_events(&mut cursor, 10, &EventFilter::default(), 4, &mut out)
            .unwrap();
        assert_eq!(out.len(), 4);
        assert_eq!(cursor, 4);
        s.read_events(&mut cursor, 10, &EventFilter::default(), 100, &mut out)
            .unwrap();
        assert_eq!(cursor, 10);
        for ((id, a), (bid, b)) in out.iter().zip(&batch) {
            assert_eq!(id, bid);
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "NaN survives too");
        }
        let only_1 = EventFilter {
            vehicles: vec![1],
            ..EventFilter::default()
        };
        let (mut cursor, mut out) = (0, Vec::new());
        s.read_events(&mut cursor, 10, &only_1, 100, &mut out)
            .unwrap();
        assert_eq!(out.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [1, 4, 7]);
        // Ids the log never got (events that could not be persisted) are
        // counted, so a reader reports them lost rather than skip them.
        let (mut cursor, mut out) = (0, Vec::new());
        assert_eq!(
            s.read_events(&mut cursor, 14, &only_1, 100, &mut out)
                .unwrap(),
            4
        );
        assert_eq!(cursor, 14);
        assert_eq!(s.expire_events(1_500).unwrap(), 6);
        assert_eq!(s.first_event_id().unwrap(), Some(6));
        assert_eq!(s.next_event_id().unwrap(), 10);
        let later: Vec<(u64, Event)> = vec![(12, ev(1, 12, EventKind::Late))];
        s.append_events(&later, 2_000).unwrap();
        let (mut cursor, mut out) = (9, Vec::new());
        assert_eq!(
            s.read_events(&mut cursor, 13, &EventFilter::default(), 100, &mut out)
                .unwrap(),
            2
        );
        assert_eq!(out.iter().map(|(id, _)| *id).collect::<Vec<_>>(), [9, 12]);
    }

    #[test]
    fn a_late_stretch_of_path_is_read_back_in_time_order() {
        let dir = tempdir();
        let s = Store::open(&dir).unwrap();
        let piece = |edge, t: f64| PathPiece {
            vehicle: 1,
            edge,
            from_m: 0.0,
            to_m: 12.5,
            t_start: t,
            t_end: t + 2.0,
        };
        // One chunk holds the path before and after a gap (100..500), the
        // next begins at 600; a stretch of the gap arrives late, then one
        // after everything.
        s.append_history(&[(1, vec![piece(1, 100.0), piece(2, 500.0)])])
            .unwrap();
        s.append_history(&[(1, vec![piece(3, 600.0)])]).unwrap();
        s.insert_history(1, &[piece(10, 200.0), piece(11, 300.0)])
            .unwrap();
        s.insert_history(1, &[piece(12, 900.0)]).unwrap();
        let mut out = Vec::new();
        s.history(1, 0.0, 1e12, 100, &mut out).unwrap();
        let edges: Vec<u32> = out.iter().map(|p| p.edge).collect();
        assert_eq!(edges, [1, 10, 11, 2, 3, 12]);
        out.clear();
        s.history(1, 250.0, 350.0, 100, &mut out).unwrap();
        let edges: Vec<u32> = out.iter().map(|p| p.edge).collect();
        assert_eq!(edges, [10, 11], "the predecessor, then the window");
    }

    #[test]
    fn history_is_read_back_by_vehicle_and_time_range() {
        let dir = tempdir();
        let s = Store::open(&dir).unwrap();
        let piece = |vehicle, edge, t: f64| PathPiece {
            vehicle,
            edge,
            from_m: 0.0,
            to_m: 12.5,
            t_start: t,
            t_end: t + 2.0,
        };
        // Vehicle 1 in two chunks, vehicle 2 in one.
        s.append_history(&[
            (
                1,
                (0..10)
                    .map(|i| piece(1, i, 1000.0 + 2.0 * f64::from(i)))
                    .collect(),
            ),
            (2, vec![piece(2, 99, 1005.0)]),
        ])
        .unwrap();
        s.append_history(&[(
            1,
            (10..20)
                .map(|i| piece(1, i, 1000.0 + 2.0 * f64::from(i)))
                .collect(),
        )])
        .unwrap();
        let mut out = Vec::new();
        assert!(!s.history(1, 0.0, 1e12, 100, &mut out).unwrap());
        assert_eq!(out.len(), 20);
        assert_eq!(
            out.iter().map(|p| p.edge).collect::<Vec<_>>(),
            (0..20).collect::<Vec<_>>()
        );
        assert_eq!(out[3], piece(1, 3, 1006.0), "exact at ms and f32 metres");
        out.clear();
        s.history(1, 1015.0, 1025.0, 100, &mut out).unwrap();
        assert_eq!(out[0].edge, 6, "the predecessor, 1012..1014, first");
        assert_eq!(out[1].edge, 7, "overlaps 1014..1016");
        assert_eq!(out.last().unwrap().edge, 12);
        // A window after the first chunk: its predecessor is in that chunk.
        out.clear();
        s.history(1, 1021.0, 1022.0, 100, &mut out).unwrap();
        assert_eq!(out.iter().map(|p| p.edge).collect::<Vec<_>>(), [9, 10, 11]);
        out.clear();
        assert!(s.history(1, 0.0, 1e12, 5, &mut out).unwrap(), "more remain");
        out.clear();
        s.history(2, 0.0, 1e12, 100, &mut out).unwrap();
        assert_eq!(out, [piece(2, 99, 1005.0)]);
        assert_eq!(
            s.expire_history(1030.0).unwrap(),
            2,
            "vehicle 1's first chunk and vehicle 2's"
        );
        out.clear();
        s.history(1, 0.0, 1e12, 100, &mut out).unwrap();
        assert_eq!(out.len(), 10);
    }

    #[test]
    fn grants_survive_and_expire() {
        let dir = tempdir();
        let s = Store::open(&dir).unwrap();
        let g = StoredGrant {
            digest: [7; 32],
            fleet: Some("acme".into()),
            stop: 42,
            expires_ms: 5_000,
        };
        s.save_grants(std::slice::from_ref(&g)).unwrap();
        s.save_grants(&[StoredGrant {
            digest: [8; 32],
            fleet: None,
            stop: 43,
            expires_ms: 9_000,
        }])
        .unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.load_grants(1_000).unwrap().len(), 2);
        let left = s.load_grants(6_000).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].fleet, None);
        assert_eq!(s.load_grants(6_000).unwrap().len(), 1);
    }

    /// A fresh directory under the target dir (removed at the next run).
    pub(crate) fn tempdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "lastmile-store-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }
}
