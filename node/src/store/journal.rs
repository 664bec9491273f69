//! The command journal's group commit. The engine appends each accepted
//! command in order (cheap: encoded and queued in memory, under the
//! engine's registry lock) and then waits in [`Journal::sync`] outside that
//! lock. The first waiter becomes the leader: it takes everything queued so
//! far and commits it in one fsynced transaction, while the dispatchers
//! arriving meanwhile queue behind it and are committed by the next leader.
//! One flush thus serves every command that arrived during the previous
//! one, so throughput grows with concurrency instead of being one command
//! per flush, and a lone command still costs one flush.
//!
//! A failed commit poisons the journal: the commands in it may or may not
//! be on disk, so every later append is refused until a restart recovers
//! what the store holds (as databases do after a failed fsync).

use std::sync::{Condvar, Mutex};

use lastmile_engine::fleet::{Command, Journal, StopId, StopOutcome, StopPlan};
use redb::Durability;
use rkyv::rancor;

use super::{Entry, JOURNAL, JOURNAL_SEQ, META, OUTCOMES, OutcomeRecord, RATINGS, Store};

/// One appended unit, encoded, waiting for its commit.
struct Staged {
    seq: u64,
    entry: Vec<u8>,
    /// Stops it closes, with their records for `stop_outcomes`.
    outcomes: Vec<(StopId, Vec<u8>)>,
    /// Stops it rates, with their ratings for `stop_ratings`.
    ratings: Vec<(StopId, Vec<u8>)>,
}

struct State {
    /// The last sequence number handed out.
    last: u64,
    /// The last sequence number on disk.
    durable: u64,
    queued: Vec<Staged>,
    /// A leader is committing (the others wait for it).
    committing: bool,
    failed: Option<String>,
}

/// The journal's queue of appended units and its leader election.
pub(super) struct GroupCommit {
    state: Mutex<State>,
    committed: Condvar,
}

impl GroupCommit {
    /// Continues after `last`, the last sequence number the store holds.
    pub(super) fn new(last: u64) -> Self {
        Self {
            state: Mutex::new(State {
                last,
                durable: last,
                queued: Vec::new(),
                committing: false,
                failed: None,
            }),
            committed: Condvar::new(),
        }
    }

    /// Whether a commit failed (the store then refuses commands).
    pub(super) fn failed(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Encodes a unit (its sequence number is given when queued).
fn encode(commands: &[Command], closed: &[StopPlan], time: f64) -> Result<Staged, String> {
    let entry = Entry {
        time,
        commands: commands.to_vec(),
    };
    let bytes = rkyv::to_bytes::<rancor::Error>(&entry).map_err(|e| e.to_string())?;
    let mut outcomes = Vec::new();
    let mut ratings = Vec::new();
    for c in commands {
        let (vehicle, stop, outcome) = match c {
            Command::Rate { stop, rating, .. } => {
                let b = rkyv::to_bytes::<rancor::Error>(rating).map_err(|e| e.to_string())?;
                ratings.push((*stop, b.to_vec()));
                continue;
            }
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
            plan: closed.iter().find(|p| p.id == stop).cloned(),
        };
        let b = rkyv::to_bytes::<rancor::Error>(&record).map_err(|e| e.to_string())?;
        outcomes.push((stop, b.to_vec()));
    }
    Ok(Staged {
        seq: 0,
        entry: bytes.to_vec(),
        outcomes,
        ratings,
    })
}

impl Store {
    /// Commits queued units in one transaction (the journal entries, their
    /// stop outcomes, and the last sequence number).
    fn commit_units(&self, units: &[Staged]) -> Result<(), redb::Error> {
        let Some(last) = units.last().map(|u| u.seq) else {
            return Ok(());
        };
        self.write(Durability::Immediate, |txn| {
            self.write_waiting_names(txn)?;
            txn.open_table(META)?.insert(JOURNAL_SEQ, last)?;
            let mut journal = txn.open_table(JOURNAL)?;
            let mut outcomes = txn.open_table(OUTCOMES)?;
            let mut ratings = txn.open_table(RATINGS)?;
            for u in units {
                journal.insert(u.seq, &u.entry[..])?;
                for (stop, record) in &u.outcomes {
                    outcomes.insert(*stop, &record[..])?;
                }
                for (stop, rating) in &u.ratings {
                    ratings.insert(*stop, &rating[..])?;
                }
            }
            Ok(())
        })
    }
}

impl Journal for Store {
    fn append(&self, commands: &[Command], closed: &[StopPlan], time: f64) -> Result<u64, String> {
        // Encoded before taking the lock: the lock is the journal's order,
        // kept short.
        let mut unit = encode(commands, closed, time)?;
        let mut st = self.group.lock();
        if let Some(e) = &st.failed {
            return Err(format!(
                "the store failed earlier and refuses commands: {e}"
            ));
        }
        st.last += 1;
        unit.seq = st.last;
        st.queued.push(unit);
        Ok(st.last)
    }

    fn sync(&self, seq: u64) -> Result<(), String> {
        let g = &self.group;
        let mut st = g.lock();
        loop {
            if st.durable >= seq {
                return Ok(());
            }
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if st.committing {
                st = g.committed.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.committing = true;
            let units = std::mem::take(&mut st.queued);
            drop(st);
            let result = self.commit_units(&units);
            st = g.lock();
            st.committing = false;
            match result {
                Ok(()) => {
                    if let Some(u) = units.last() {
                        st.durable = st.durable.max(u.seq);
                    }
                    self.note_flush(units.len());
                }
                Err(e) => st.failed = Some(e.to_string()),
            }
            g.committed.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::tempdir;
    use super::*;
    use lastmile_engine::fleet::StopPlan;
    use lastmile_roadgraph::LatLon;
    use std::sync::Arc;

    fn assign(vehicle: u64) -> Command {
        Command::AssignRoute {
            vehicle,
            stops: vec![StopPlan::new(vehicle, LatLon::new(43.7, 7.42))],
        }
    }

    #[test]
    fn concurrent_commands_share_flushes_and_all_are_durable_in_order() {
        let dir = tempdir();
        let threads = 8;
        let per_thread = 40;
        {
            let s = Arc::new(Store::open(&dir).unwrap());
            // The engine appends under its registry lock; a mutex stands in.
            let order = Arc::new(Mutex::new(()));
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let (s, order) = (s.clone(), order.clone());
                    std::thread::spawn(move || {
                        for i in 0..per_thread {
                            let v = (t * per_thread + i) as u64;
                            let seq = {
                                let _held = order.lock().unwrap();
                                s.append(&[assign(v)], &[], v as f64).unwrap()
                            };
                            s.sync(seq).unwrap();
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
            let units = (threads * per_thread) as u64;
            let flushes = s.commit_latency().count();
            assert!(
                flushes < units,
                "{units} concurrent commands took {flushes} flushes: no grouping"
            );
            assert_eq!(s.journal_flushes(), (units, flushes));
        }
        let s = Store::open(&dir).unwrap();
        let j = s.journal_after(0).unwrap();
        assert_eq!(j.len(), threads * per_thread);
        for (i, (seq, _, _)) in j.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1, "sequence numbers are dense and ordered");
        }
        // Each unit's time is its vehicle: every command is there once.
        let mut times: Vec<u64> = j.iter().map(|(_, t, _)| *t as u64).collect();
        times.sort_unstable();
        assert_eq!(
            times,
            (0..(threads * per_thread) as u64).collect::<Vec<_>>()
        );
        assert_eq!(s.journal_seq().unwrap(), (threads * per_thread) as u64);
    }

    #[test]
    fn a_failed_commit_refuses_later_commands() {
        let dir = tempdir();
        let s = Store::open(&dir).unwrap();
        let seq = s.append(&[assign(1)], &[], 1.0).unwrap();
        s.sync(seq).unwrap();
        s.group.lock().failed = Some("disk full".into());
        let e = s.append(&[assign(2)], &[], 2.0).unwrap_err();
        assert!(e.contains("disk full"), "{e}");
        assert_eq!(s.group.failed().as_deref(), Some("disk full"));
        // What was durable before stays readable.
        assert_eq!(s.journal_after(0).unwrap().len(), 1);
    }
}
