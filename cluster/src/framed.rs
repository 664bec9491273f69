//! What the cluster puts in a NATS message of its own: a version byte
//! (1), then the rkyv archive of the value. A message of another version,
//! cut short or damaged is refused whole (the archive is checked, not
//! trusted).

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;

const VERSION: u8 = 1;

/// `v` as message bytes.
pub(crate) fn encode<T>(v: &T) -> Result<Vec<u8>, String>
where
    T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    let archive = rkyv::to_bytes::<rancor::Error>(v).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(archive.len() + 1);
    out.push(VERSION);
    out.extend_from_slice(&archive);
    Ok(out)
}

/// Message bytes read back as a `T`; `Err` says why not.
pub(crate) fn decode<T>(bytes: &[u8]) -> Result<T, String>
where
    T: rkyv::Archive,
    T::Archived: for<'a> rkyv::bytecheck::CheckBytes<HighValidator<'a, rancor::Error>>
        + rkyv::Deserialize<T, HighDeserializer<rancor::Error>>,
{
    match bytes.split_first() {
        Some((&VERSION, archive)) => {
            // rkyv reads an archive in place: it must be aligned.
            let mut aligned = AlignedVec::<16>::with_capacity(archive.len());
            aligned.extend_from_slice(archive);
            rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(|e| e.to_string())
        }
        Some((v, _)) => Err(format!("a message of version {v}")),
        None => Err("an empty message".into()),
    }
}
