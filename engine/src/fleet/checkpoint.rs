//! Checkpoints: the live engine's state in one file, so a restarted server
//! answers ETAs at once instead of after the next pings. It holds every
//! vehicle as its shard had it (matcher window, position, stops with ETAs
//! and paths, detector state), the stop registry, the learnt traffic, and
//! the sequence number of the last journalled command it includes; commands
//! after that are replayed from the journal on restore.
//!
//! Vehicles are rkyv archives, one record each, written by their own shard
//! (no copy of the fleet is made) and read back by the shards they land on
//! now, whatever the shard count was. The file is checked whole (xxh3) and
//! bound to the graph it was taken on (its fingerprint): a checkpoint from
//! another map is refused, never half-applied.
//!
//! Vehicles are streamed to the file in chunks as their shards serialise
//! them, so taking a checkpoint needs a few megabytes, not a second copy
//! of the fleet; the engine-wide part follows them.
//!
//! Layout (little-endian):
//!
//! ```text
//! 0   8  magic "LMCKPT\0\x01"
//! 8   4  format version (11)
//! 12  4  reserved, 0
//! 16  …  body: records, meta (rkyv), vehicle count u64, records length
//!            u64, meta length u64
//! end-16 8  xxh3-64 of the body
//! end-8  8  body length
//! record: vehicle id u64, archive length u32, 0u32, archive, zero
//!         padding to a multiple of 16
//! ```
//!
//! The format version also names the layout of the vehicle archives, which
//! follow the engine's structs: a build that changes them bumps it, and a
//! file of another version is refused whole (the server then replays the
//! journal instead). Format 3 made the matcher's candidates and steps
//! compact, format 4 the paths and added the buffers' high-water marks,
//! format 5 narrowed the matcher's estimators, the detectors, the stops and
//! their legs, format 6 gave the along-path smoother its filter state,
//! format 7 the held pings their own fixes, format 8 the steps whose chain
//! broke because no road led to them, format 9 the stops' customer
//! ratings, format 10 the customer milestones each stop has had, format 11
//! the stops' arrival windows, the vehicles' noted predictions and the
//! learnt ETA errors, format 12 those errors learnt apart for vehicles
//! that stand and notes of whole seconds, format 13 the stops' `late`
//! and `at_risk` waiting to be confirmed and the fleets' zones (and who
//! is inside them); formats 1 to 12 are no longer read.

use std::io::{self, Write};
use std::ops::Range;
use std::sync::Arc;

use rkyv::rancor;
use rkyv::util::AlignedVec;

use super::vehicle::Vehicle;
use super::window::{ErrorModel, Outcome};
use super::{StopId, StopRecord, VehicleId};
use crate::traffic::{EdgeObservation, LearntTraffic};
use crate::zones::ZoneDef;

const MAGIC: &[u8; 8] = b"LMCKPT\0\x01";
const FORMAT: u32 = 14;
const HEADER: usize = 16;
const TRAILER: usize = 16;

/// Why a checkpoint could not be read or restored.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a lastmile checkpoint")]
    BadMagic,
    #[error("checkpoint format {0} is not supported (this build reads format {FORMAT} only)")]
    Format(u32),
    #[error("checkpoint is truncated or its layout is damaged")]
    Truncated,
    #[error("checkpoint checksum mismatch (file is corrupt)")]
    Checksum,
    #[error("checkpoint was taken on another graph")]
    GraphMismatch,
    #[error("checkpoint does not fit this graph's traffic model")]
    Traffic,
    #[error("checkpoint record is invalid: {0}")]
    Record(String),
}

/// The engine-wide part of a checkpoint.
#[derive(Debug, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub(crate) struct Meta {
    pub graph_fingerprint: u64,
    pub journal_seq: u64,
    /// The last tick's event time.
    pub event_time: f64,
    /// Metric installs so far: restored paths are timed on older metrics.
    pub metric_version: u64,
    pub published_at: f64,
    /// The routing metric's travel times that differ from free flow, ms.
    pub installed: Vec<(u32, u32)>,
    /// The changes of a customization under way (installed at the next tick).
    pub pending: Vec<(u32, u32)>,
    /// Traffic observations and ETA outcomes the shards held for the next
    /// tick.
    pub observations: Vec<EdgeObservation>,
    pub outcomes: Vec<Outcome>,
    /// The learnt ETA errors, as learnt and as of the windows the shards
    /// read.
    pub errors: [ErrorModel; 2],
    pub stops: Vec<(StopId, StopRecord)>,
    pub routes: Vec<(VehicleId, Vec<StopId>)>,
    /// Every fleet's zones, as given.
    pub zones: Vec<(u32, Vec<ZoneDef>)>,
    pub traffic: LearntTraffic,
}

/// A checkpoint in memory: taken by [`super::Engine::checkpoint`], written
/// with [`Checkpoint::write_to`], read back with [`Checkpoint::read`] and
/// given to [`super::Engine::restore`].
pub struct Checkpoint {
    pub(crate) meta: Meta,
    /// The vehicle records: a range of the file read (or of the blob
    /// taken), shared with the shards that restore them, not copied.
    pub(crate) records: RecordsBuf,
    pub(crate) vehicles: usize,
}

/// Vehicle records inside a shared buffer.
#[derive(Clone)]
pub(crate) struct RecordsBuf {
    bytes: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl RecordsBuf {
    pub fn new(bytes: Vec<u8>) -> Self {
        let range = 0..bytes.len();
        Self {
            bytes: Arc::new(bytes),
            range,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[self.range.clone()]
    }
}

impl Checkpoint {
    /// The last journalled command this checkpoint includes.
    pub fn journal_seq(&self) -> u64 {
        self.meta.journal_seq
    }

    /// Vehicles it holds.
    pub fn vehicles(&self) -> usize {
        self.vehicles
    }

    /// Stops it holds (open, and closed within the retention).
    pub fn stops(&self) -> usize {
        self.meta.stops.len()
    }

    /// Writes the file format; returns the bytes written.
    pub fn write_to(&self, w: &mut impl Write) -> io::Result<u64> {
        let mut out = Writer::start(w)?;
        out.records(self.records.as_slice())?;
        out.finish(&self.meta, self.vehicles)
    }

    /// Reads and checks a checkpoint file's bytes (the vehicles are
    /// validated when restored).
    pub fn read(bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
        Self::from_file(bytes.to_vec())
    }

    /// [`Checkpoint::read`] keeping the file's bytes as they are: the
    /// records stay where they are and are restored from there.
    pub fn from_file(bytes: Vec<u8>) -> Result<Checkpoint, CheckpointError> {
        if bytes.len() < HEADER + TRAILER || &bytes[..8] != MAGIC {
            return Err(CheckpointError::BadMagic);
        }
        let format = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if format != FORMAT {
            return Err(CheckpointError::Format(format));
        }
        let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let (digest, body_len) = (word(bytes.len() - 16), word(bytes.len() - 8));
        let body = &bytes[HEADER..bytes.len() - TRAILER];
        if body_len != body.len() as u64 {
            return Err(CheckpointError::Truncated);
        }
        if xxhash_rust::xxh3::xxh3_64(body) != digest {
            return Err(CheckpointError::Checksum);
        }
        let word_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
        if body.len() < 24 {
            return Err(CheckpointError::Truncated);
        }
        let footer = body.len() - 24;
        let vehicles = word_at(footer) as usize;
        let (records_len, meta_len) = (word_at(footer + 8), word_at(footer + 16));
        if records_len.checked_add(meta_len) != Some(footer as u64) {
            return Err(CheckpointError::Truncated);
        }
        let records_len = records_len as usize;
        let (meta, records) = (&body[records_len..footer], &body[..records_len]);
        let meta = rkyv::from_bytes::<Meta, rancor::Error>(&aligned(meta))
            .map_err(|e| CheckpointError::Record(format!("meta: {e}")))?;
        let found = Records(records).try_fold(0usize, |n, r| r.map(|_| n + 1))?;
        if found != vehicles {
            return Err(CheckpointError::Truncated);
        }
        // Where the records sit in the file (a sub-slice of it).
        let start = records.as_ptr() as usize - bytes.as_ptr() as usize;
        let range = start..start + records.len();
        Ok(Checkpoint {
            meta,
            records: RecordsBuf {
                bytes: Arc::new(bytes),
                range,
            },
            vehicles,
        })
    }
}

/// Writes the file format as the parts come: vehicle records in chunks,
/// then the engine-wide part.
pub(crate) struct Writer<'w, W: Write> {
    w: &'w mut W,
    hasher: xxhash_rust::xxh3::Xxh3,
    body_len: u64,
    records_len: u64,
}

impl<'w, W: Write> Writer<'w, W> {
    pub fn start(w: &'w mut W) -> io::Result<Self> {
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        w.write_all(&header)?;
        Ok(Self {
            w,
            hasher: xxhash_rust::xxh3::Xxh3::new(),
            body_len: 0,
            records_len: 0,
        })
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.body_len += bytes.len() as u64;
        self.w.write_all(bytes)
    }

    /// Whole records (as [`push_record`] lays them out), in any order.
    pub fn records(&mut self, records: &[u8]) -> io::Result<()> {
        self.records_len += records.len() as u64;
        self.put(records)
    }

    /// Writes the engine-wide part and the trailer; returns the file's size.
    pub fn finish(mut self, meta: &Meta, vehicles: usize) -> io::Result<u64> {
        let meta = rkyv::to_bytes::<rancor::Error>(meta).map_err(io::Error::other)?;
        self.put(&meta)?;
        self.put(&(vehicles as u64).to_le_bytes())?;
        self.put(&self.records_len.to_le_bytes())?;
        self.put(&(meta.len() as u64).to_le_bytes())?;
        let digest = self.hasher.digest();
        self.w.write_all(&digest.to_le_bytes())?;
        self.w.write_all(&self.body_len.to_le_bytes())?;
        Ok(HEADER as u64 + self.body_len + TRAILER as u64)
    }
}

fn aligned(bytes: &[u8]) -> AlignedVec {
    let mut v = AlignedVec::with_capacity(bytes.len());
    v.extend_from_slice(bytes);
    v
}

/// Appends one vehicle's record to a blob.
pub(crate) fn push_record(blob: &mut Vec<u8>, v: &Vehicle) -> Result<(), rancor::Error> {
    let archive = rkyv::to_bytes::<rancor::Error>(v)?;
    blob.extend_from_slice(&v.id.to_le_bytes());
    blob.extend_from_slice(&(archive.len() as u32).to_le_bytes());
    blob.extend_from_slice(&[0; 4]);
    blob.extend_from_slice(&archive);
    blob.resize(blob.len().next_multiple_of(16), 0);
    Ok(())
}

/// The records of a blob, as `(vehicle id, record bytes)`.
pub(crate) struct Records<'a>(pub &'a [u8]);

impl<'a> Iterator for Records<'a> {
    type Item = Result<(VehicleId, &'a [u8]), CheckpointError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        if self.0.len() < 16 {
            self.0 = &[];
            return Some(Err(CheckpointError::Truncated));
        }
        let id = u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(self.0[8..12].try_into().expect("4 bytes")) as usize;
        let end = 16 + len.next_multiple_of(16);
        if end > self.0.len() {
            self.0 = &[];
            return Some(Err(CheckpointError::Truncated));
        }
        let (record, rest) = self.0.split_at(end);
        self.0 = rest;
        Some(Ok((id, record)))
    }
}

impl<'a> Records<'a> {
    /// The whole record of the vehicle whose record starts the slice
    /// (header included), for handing to another blob.
    pub fn archive(record: &[u8]) -> &[u8] {
        let len = u32::from_le_bytes(record[8..12].try_into().expect("4 bytes")) as usize;
        &record[16..16 + len]
    }
}

/// Rebuilds a vehicle from its record, validating the archive.
pub(crate) fn vehicle_from(record: &[u8]) -> Result<Vehicle, CheckpointError> {
    let archive = aligned(Records::archive(record));
    rkyv::from_bytes::<Vehicle, rancor::Error>(&archive)
        .map(Vehicle::restored)
        .map_err(|e| CheckpointError::Record(e.to_string()))
}
