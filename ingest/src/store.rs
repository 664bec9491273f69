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
//! - `events`: the event log by id, kept `event_retention_s`, read back by a
//!   subscriber resuming from the last id it saw.
//! - `tracking_tokens`: minted tracking tokens (SHA-256 digests only), so a
//!   customer's link survives a restart.
//! - `history`: each vehicle's finalised matched path, in chunks by vehicle
//!   and time.
//!
//! Every write is one transaction committed with `Durability::Immediate`
//! (fsync), except the history, which may lose its last seconds to a crash
//! like the pings it comes from. Commit times are recorded for the metrics.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use lastmile_engine::fleet::{
    Command, Event, EventFilter, EventKind, Histogram, Journal, StopId, StopOutcome, VehicleId,
};
use lastmile_roadgraph::LatLon;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use rkyv::rancor;
use rkyv::util::AlignedVec;

const JOURNAL: TableDefinition<u64, &[u8]> = TableDefinition::new("journal");
const OUTCOMES: TableDefinition<u64, &[u8]> = TableDefinition::new("stop_outcomes");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const GRANTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tracking_tokens");
const HISTORY: TableDefinition<(u64, i64), &[u8]> = TableDefinition::new("history");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// `meta` key: the last journal sequence number handed out (survives truncation).
const JOURNAL_SEQ: &str = "journal_seq";

/// One journal entry: commands applied as a unit at one event time.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Entry {
    time: f64,
    commands: Vec<Command>,
}

/// A closed stop as the store keeps it.
#[derive(Clone, Debug, PartialEq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct OutcomeRecord {
    pub vehicle: VehicleId,
    pub stop: StopId,
    /// Event time it was closed.
    pub time: f64,
    pub outcome: StopOutcome,
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
        for t in [JOURNAL, OUTCOMES, EVENTS] {
            txn.open_table(t)?;
        }
        txn.open_table(GRANTS)?;
        txn.open_table(HISTORY)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(Self {
            db,
            path,
            commits: Mutex::new(Histogram::default()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
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

    /// The last journal sequence number handed out (0: none yet).
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
        let r = rkyv::from_bytes::<OutcomeRecord, rancor::Error>(&aligned(v.value()))
            .with_context(|| format!("outcome of stop {stop} is damaged"))?;
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
    ) -> anyhow::Result<()> {
        if *cursor >= until {
            return Ok(());
        }
        let txn = self.db.begin_read()?;
        let t = txn.open_table(EVENTS)?;
        let mut read = 0;
        for row in t.range(*cursor..until)? {
            let (k, v) = row?;
            *cursor = k.value() + 1;
            if let Some((e, _)) = decode_event(v.value())
                && filter.matches(&e)
            {
                out.push((k.value(), e));
                read += 1;
                if read == max {
                    return Ok(());
                }
            }
        }
        *cursor = until;
        Ok(())
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

    // --------------------------------------------------------- tracking tokens

    pub fn save_grant(&self, g: &StoredGrant) -> Result<(), redb::Error> {
        let mut v = Vec::with_capacity(16 + g.fleet.as_ref().map_or(0, String::len));
        v.extend_from_slice(&g.stop.to_le_bytes());
        v.extend_from_slice(&g.expires_ms.to_le_bytes());
        if let Some(f) = &g.fleet {
            v.push(1);
            v.extend_from_slice(f.as_bytes());
        }
        self.write(Durability::Immediate, |txn| {
            txn.open_table(GRANTS)?.insert(&g.digest[..], &v[..])?;
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

impl Journal for Store {
    fn record(&self, commands: &[Command], time: f64) -> Result<u64, String> {
        let entry = Entry {
            time,
            commands: commands.to_vec(),
        };
        let bytes = rkyv::to_bytes::<rancor::Error>(&entry).map_err(|e| e.to_string())?;
        self.write(Durability::Immediate, |txn| {
            let mut meta = txn.open_table(META)?;
            let seq = meta.get(JOURNAL_SEQ)?.map_or(0, |v| v.value()) + 1;
            meta.insert(JOURNAL_SEQ, seq)?;
            txn.open_table(JOURNAL)?.insert(seq, &bytes[..])?;
            let mut outcomes = txn.open_table(OUTCOMES)?;
            for c in commands {
                let (vehicle, stop, outcome) = match c {
                    Command::Complete {
                        vehicle,
                        stop,
                        proof,
                    } => (*vehicle, *stop, StopOutcome::Completed(proof.clone())),
                    Command::Fail {
                        vehicle,
                        stop,
                        reason,
                    } => (
                        *vehicle,
                        *stop,
                        StopOutcome::Failed {
                            reason: reason.clone(),
                        },
                    ),
                    _ => continue,
                };
                let record = OutcomeRecord {
                    vehicle,
                    stop,
                    time,
                    outcome,
                };
                let b = rkyv::to_bytes::<rancor::Error>(&record).map_err(|e| {
                    redb::Error::from(redb::StorageError::Io(std::io::Error::other(e)))
                })?;
                outcomes.insert(stop, &b[..])?;
            }
            Ok(seq)
        })
        .map_err(|e| e.to_string())
    }
}

/// An event in 80 bytes: vehicle, seq, time, stop (u64::MAX: none), lat,
/// lon, value, reference, kind (in a u64), stored at (ms).
fn encode_event(e: &Event, stored_ms: i64) -> [u8; EVENT_BYTES] {
    let mut b = [0u8; EVENT_BYTES];
    let words: [u64; 10] = [
        e.vehicle,
        e.seq,
        e.time.to_bits(),
        e.stop.unwrap_or(u64::MAX),
        e.pos.lat.to_bits(),
        e.pos.lon.to_bits(),
        e.value.to_bits(),
        e.reference.to_bits(),
        u64::from(e.kind as u8),
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
    let kind = EventKind::from_code(u8::try_from(w(8)).ok()?)?;
    Some((
        Event {
            vehicle: w(0),
            seq: w(1),
            time: f(2),
            kind,
            stop: (w(3) != u64::MAX).then_some(w(3)),
            pos: LatLon::new(f(4), f(5)),
            value: f(6),
            reference: f(7),
        },
        w(9) as i64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lastmile_engine::fleet::{ProofOfDelivery, StopPlan};

    fn ev(vehicle: u64, seq: u64, kind: EventKind) -> Event {
        Event {
            vehicle,
            seq,
            time: 1000.0 + seq as f64,
            kind,
            stop: seq.is_multiple_of(2).then_some(seq),
            pos: LatLon::new(43.7, 7.4),
            value: 1.5,
            reference: f64::NAN,
        }
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
            assert_eq!(s.record(std::slice::from_ref(&assign), 10.0), Ok(1));
            let done = Command::Complete {
                vehicle: 3,
                stop: 7,
                proof: ProofOfDelivery {
                    photo_refs: vec!["s3://pod/7.jpg".into()],
                    ..ProofOfDelivery::default()
                },
            };
            assert_eq!(s.record(std::slice::from_ref(&done), 20.0), Ok(2));
        }
        let s = Store::open(&dir).unwrap();
        let j = s.journal_after(0).unwrap();
        assert_eq!(j.len(), 2);
        assert_eq!(j[0].1, 10.0);
        assert!(matches!(&j[0].2[0], Command::AssignRoute { stops, .. } if stops[0] == plan));
        let o = s.outcome(7).unwrap().unwrap();
        assert_eq!(o.time, 20.0);
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
        assert_eq!(s.record(&[fail], 30.0), Ok(3));
        assert_eq!(s.journal_seq().unwrap(), 3);
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
        assert_eq!(s.expire_events(1_500).unwrap(), 6);
        assert_eq!(s.first_event_id().unwrap(), Some(6));
        assert_eq!(s.next_event_id().unwrap(), 10);
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
        s.save_grant(&g).unwrap();
        s.save_grant(&StoredGrant {
            digest: [8; 32],
            fleet: None,
            stop: 43,
            expires_ms: 9_000,
        })
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
