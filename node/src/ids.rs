//! Ids as fleets name them. Every system that sends work to lastmile names
//! its vehicles and stops with its own strings (van registrations, device
//! IMEIs, order numbers); the engine knows them by compact `u64`s. This
//! module maps one to the other, per fleet: two fleets may both have a
//! stop `17` or a van `van-42`, and they are different things.
//!
//! The mapping:
//! - a vehicle named by a number inside its fleet's configured ranges
//!   (`[[fleets]] vehicles`), or any number named by an admin, is that
//!   number inside the engine (the version-1 protocol's numbering, kept);
//! - every other name gets an allocated id at or above [`ALLOCATED`], which
//!   carries its fleet's 24-bit *slot* (a hash of the fleet's name), so the
//!   fleet of an allocated id is known without a lookup, and ids are drawn
//!   per fleet: nobody can count another fleet's ids from the ones they get;
//! - `#N` names the engine's id `N` directly (how a version-1 client, which
//!   has only numbers, sees a name that is not one); it reaches only what
//!   the caller's fleet holds.
//!
//! Allocated names are written to the store before the request that created
//! them is answered, and read back at start.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// First allocated id; below it, ids are the numbers clients gave.
pub const ALLOCATED: u64 = 1 << 62;
/// Bits of an allocated id's counter (below them, the fleet's slot).
pub const COUNTER_BITS: u32 = 38;
const SLOT_MASK: u64 = (1 << 24) - 1;
/// Longest name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 128;

/// What an id names: vehicles, stops and zones are separate spaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Vehicle = 1,
    Stop = 2,
    Zone = 3,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Vehicle),
            2 => Some(Self::Stop),
            3 => Some(Self::Zone),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Vehicle => "vehicle",
            Self::Stop => "stop",
            Self::Zone => "zone",
        }
    }
}

/// The slot of a fleet (`""` for names outside any fleet, an admin's).
pub fn slot_of_fleet(name: &str) -> u32 {
    let d = ring::digest::digest(
        &ring::digest::SHA256,
        format!("lastmile fleet {name}").as_bytes(),
    );
    let b = d.as_ref();
    u32::from_le_bytes([b[0], b[1], b[2], 0])
}

/// The fleet slot an allocated id carries (`None` below [`ALLOCATED`]).
pub fn slot_of_id(id: u64) -> Option<u32> {
    (id >= ALLOCATED).then_some(((id >> COUNTER_BITS) & SLOT_MASK) as u32)
}

/// Where a caller's names live: its fleet's slot and vehicle ranges, or
/// (admins) every number as itself.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    pub slot: u32,
    /// The fleet's vehicle ranges, sorted and merged.
    pub ranges: &'a [[u64; 2]],
    /// An admin: any number is the engine's id, any `#N` reachable.
    pub everything: bool,
}

impl Scope<'_> {
    fn in_ranges(&self, n: u64) -> bool {
        let i = self.ranges.partition_point(|r| r[1] < n);
        self.ranges.get(i).is_some_and(|r| r[0] <= n)
    }

    /// Whether the engine id `id` of this kind may be named from here.
    pub fn reaches(&self, kind: Kind, id: u64) -> bool {
        self.everything
            || slot_of_id(id) == Some(self.slot)
            || (kind == Kind::Vehicle && self.in_ranges(id))
    }
}

/// A name that cannot be one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdError {
    Invalid(String),
    /// The fleet has as many names of this kind as it may.
    Full(Kind),
    /// The shared directory (a cluster's) did not answer.
    Unavailable(String),
}

impl std::fmt::Display for IdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalid(m) => f.write_str(m),
            Self::Full(k) => write!(f, "the fleet has as many {} ids as it may", k.as_str()),
            Self::Unavailable(why) => write!(f, "the cluster's names are unavailable: {why}"),
        }
    }
}

/// How a name reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Name {
    /// `#N`: the engine's id.
    Engine(u64),
    /// A number in canonical form (no sign, no leading zero) below [`ALLOCATED`].
    Number(u64),
    Text,
}

fn parse(kind: Kind, name: &str) -> Result<Name, IdError> {
    let bad = |why: &str| IdError::Invalid(format!("{} id {name:?}: {why}", kind.as_str()));
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(&format!("longer than {MAX_NAME_LEN} bytes")));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("holds a control character"));
    }
    if let Some(n) = name.strip_prefix('#') {
        return n
            .parse::<u64>()
            .map(Name::Engine)
            .map_err(|_| bad("`#` starts engine ids only (#1234)"));
    }
    Ok(match canonical_number(name) {
        Some(n) => Name::Number(n),
        None => Name::Text,
    })
}

/// `name` as a number, if it is one written the one way (`7`, not `07`).
pub fn canonical_number(name: &str) -> Option<u64> {
    let plain = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_digit())
        && (name == "0" || !name.starts_with('0'));
    plain
        .then(|| name.parse::<u64>().ok())
        .flatten()
        .filter(|n| *n < ALLOCATED)
}

/// A name allocated but not yet in the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewName {
    pub kind: Kind,
    pub id: u64,
    pub name: Arc<str>,
}

/// Names shared with other nodes (a cluster's): this node's maps cache
/// what it binds or looks up there, so each name costs one round trip per
/// node. Calls block; they are rare (a name's first use on a node).
pub trait Directory: Send + Sync {
    /// The number (the allocated id's counter) bound to `name`, binding the
    /// next one free if none is; at most `limit` numbers per (kind, slot).
    fn bind(&self, kind: Kind, slot: u32, name: &str, limit: u64) -> Result<u64, IdError>;
    /// The number bound to `name`, if any node bound it.
    fn lookup(&self, kind: Kind, slot: u32, name: &str) -> Result<Option<u64>, IdError>;
    /// The name bound to allocated id `id`, if any.
    fn label(&self, kind: Kind, id: u64) -> Result<Option<String>, IdError>;
}

#[derive(Default)]
struct Space {
    by_name: HashMap<Arc<str>, u64>,
    next: u64,
}

#[derive(Default)]
struct Inner {
    spaces: HashMap<(Kind, u32), Space>,
    names: HashMap<(Kind, u64), Arc<str>>,
    /// Allocated since start, not yet written (or being written).
    unsaved: HashMap<(Kind, u64), Arc<str>>,
}

/// The names of every fleet.
pub struct Ids {
    inner: RwLock<Inner>,
    max_per_space: usize,
    /// In a cluster, where names are bound (the local maps cache it).
    directory: Option<Arc<dyn Directory>>,
}

fn allocated(slot: u32, number: u64) -> u64 {
    ALLOCATED | u64::from(slot) << COUNTER_BITS | number
}

impl Ids {
    /// `max_per_space`: names one fleet may hold of one kind.
    pub fn new(max_per_space: usize) -> Self {
        Self {
            inner: RwLock::default(),
            max_per_space: max_per_space.max(1),
            directory: None,
        }
    }

    /// Names bound in `directory`, shared with other nodes, rather than
    /// allocated here and saved in this node's store.
    pub fn shared(max_per_space: usize, directory: Arc<dyn Directory>) -> Self {
        Self {
            directory: Some(directory),
            ..Self::new(max_per_space)
        }
    }

    /// A name the directory bound, cached here.
    /// Makes sure the name of `id` is at hand, read from the directory
    /// if this node has not seen it: `Err` when the directory could not
    /// be read (a cluster's names bucket in election), so that a caller
    /// that must not render `#<id>` for good (a webhook) can try again.
    pub fn fetch(&self, kind: Kind, id: u64) -> Result<(), IdError> {
        if id < ALLOCATED || self.read().names.contains_key(&(kind, id)) {
            return Ok(());
        }
        if let Some(d) = &self.directory
            && let Some(name) = d.label(kind, id)?
        {
            self.cache(kind, id, &name);
        }
        Ok(())
    }

    fn cache(&self, kind: Kind, id: u64, name: &str) {
        let Some(slot) = slot_of_id(id) else { return };
        let mut inner = self.write();
        let name: Arc<str> = name.into();
        let space = inner.spaces.entry((kind, slot)).or_default();
        space.by_name.insert(name.clone(), id);
        inner.names.insert((kind, id), name);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The engine id `name` stands for in `scope`, if it names one there
    /// (`None`: nothing of that name, or nothing the caller may reach:
    /// the two are the same answer).
    pub fn find(&self, scope: &Scope<'_>, kind: Kind, name: &str) -> Result<Option<u64>, IdError> {
        Ok(match parse(kind, name)? {
            Name::Engine(id) => scope.reaches(kind, id).then_some(id),
            Name::Number(n) if scope.everything => Some(n),
            Name::Number(n) if kind == Kind::Vehicle && scope.in_ranges(n) => Some(n),
            _ => {
                let here = self
                    .read()
                    .spaces
                    .get(&(kind, scope.slot))
                    .and_then(|s| s.by_name.get(name).copied());
                match (here, &self.directory) {
                    (None, Some(d)) => {
                        let found = d.lookup(kind, scope.slot, name)?;
                        let id = found.map(|n| allocated(scope.slot, n));
                        if let Some(id) = id {
                            self.cache(kind, id, name);
                        }
                        id
                    }
                    (here, _) => here,
                }
            }
        })
    }

    /// As [`find`](Self::find), allocating an id for a new name. The
    /// second value is a name the store does not hold yet: save it (then
    /// [`saved`](Self::saved)) before answering the request.
    pub fn find_or_create(
        &self,
        scope: &Scope<'_>,
        kind: Kind,
        name: &str,
    ) -> Result<(u64, Option<NewName>), IdError> {
        if let Some(id) = self.find(scope, kind, name)? {
            let unsaved = self.read().unsaved.get(&(kind, id)).map(|n| NewName {
                kind,
                id,
                name: n.clone(),
            });
            return Ok((id, unsaved));
        }
        if let Name::Engine(_) = parse(kind, name)? {
            // `#N` reaches ids that exist; it never makes one.
            return Err(IdError::Invalid(format!(
                "{} {name} is not one of your fleet's",
                kind.as_str()
            )));
        }
        if let Some(d) = &self.directory {
            let limit = (self.max_per_space as u64).min(1 << COUNTER_BITS);
            let id = allocated(scope.slot, d.bind(kind, scope.slot, name, limit)?);
            self.cache(kind, id, name);
            return Ok((id, None));
        }
        let mut inner = self.write();
        let inner = &mut *inner;
        let space = inner.spaces.entry((kind, scope.slot)).or_default();
        if let Some(&id) = space.by_name.get(name) {
            // Allocated by another request since the look-up above.
            let n = inner.unsaved.get(&(kind, id)).cloned();
            return Ok((id, n.map(|name| NewName { kind, id, name })));
        }
        if space.by_name.len() >= self.max_per_space || space.next >= 1 << COUNTER_BITS {
            return Err(IdError::Full(kind));
        }
        let id = allocated(scope.slot, space.next);
        space.next += 1;
        let name: Arc<str> = name.into();
        space.by_name.insert(name.clone(), id);
        inner.names.insert((kind, id), name.clone());
        inner.unsaved.insert((kind, id), name.clone());
        Ok((id, Some(NewName { kind, id, name })))
    }

    /// The store now holds these names.
    pub fn saved(&self, names: &[NewName]) {
        let mut inner = self.write();
        for n in names {
            inner.unsaved.remove(&(n.kind, n.id));
        }
    }

    /// Takes back a name the store kept.
    pub fn restore(&self, kind: Kind, id: u64, name: &str) {
        let Some(slot) = slot_of_id(id) else { return };
        let mut inner = self.write();
        let name: Arc<str> = name.into();
        let space = inner.spaces.entry((kind, slot)).or_default();
        space.next = space.next.max((id & ((1 << COUNTER_BITS) - 1)) + 1);
        space.by_name.insert(name.clone(), id);
        inner.names.insert((kind, id), name);
    }

    /// Names a stop an earlier version kept under its number (stop ids were
    /// one space across fleets before names): in `scope`'s fleet the number
    /// goes on naming it. Not stored: the engine's registry says which
    /// stops these are at every start, until they are forgotten. False if
    /// the fleet already uses that name.
    pub fn adopt_number(&self, scope: &Scope<'_>, kind: Kind, id: u64) -> bool {
        if id >= ALLOCATED {
            return false;
        }
        let mut inner = self.write();
        let inner = &mut *inner;
        let space = inner.spaces.entry((kind, scope.slot)).or_default();
        let name: Arc<str> = id.to_string().into();
        if space.by_name.contains_key(&name) {
            return false;
        }
        space.by_name.insert(name.clone(), id);
        inner.names.insert((kind, id), name);
        true
    }

    /// How many names are held (all fleets, both kinds).
    pub fn len(&self) -> usize {
        self.read().names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of engine id `id` as `scope` sees it: the fleet's own name
    /// for it, the number for ids below [`ALLOCATED`], `#N` for what has no
    /// name the caller can use. With `numbers_only` (a version-1 client),
    /// a name that is not a number is given as `#N`.
    pub fn label(&self, scope: &Scope<'_>, kind: Kind, id: u64, numbers_only: bool) -> String {
        if id < ALLOCATED {
            return id.to_string();
        }
        let _ = self.fetch(kind, id);
        let inner = self.read();
        match inner.names.get(&(kind, id)) {
            Some(name)
                if slot_of_id(id) == Some(scope.slot)
                    && (!numbers_only || canonical_number(name).is_some()) =>
            {
                name.to_string()
            }
            _ => format!("#{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(name: &str, ranges: &'static [[u64; 2]]) -> Scope<'static> {
        Scope {
            slot: slot_of_fleet(name),
            ranges,
            everything: false,
        }
    }

    #[test]
    fn fleets_have_their_own_names() {
        let ids = Ids::new(100);
        let (acme, globex) = (scope("acme", &[[0, 999]]), scope("globex", &[[1000, 1999]]));
        // A number in the fleet's range is itself; outside it, a name.
        assert_eq!(ids.find(&acme, Kind::Vehicle, "42"), Ok(Some(42)));
        assert_eq!(ids.find(&globex, Kind::Vehicle, "42"), Ok(None));
        let (g42, new) = ids.find_or_create(&globex, Kind::Vehicle, "42").unwrap();
        assert!(g42 >= ALLOCATED && new.is_some());
        assert_eq!(slot_of_id(g42), Some(globex.slot));
        // The same text in two fleets: two ids; asked again: the same one.
        let (a, _) = ids.find_or_create(&acme, Kind::Stop, "order-17").unwrap();
        let (g, _) = ids.find_or_create(&globex, Kind::Stop, "order-17").unwrap();
        assert_ne!(a, g);
        assert_eq!(
            ids.find_or_create(&acme, Kind::Stop, "order-17").unwrap().0,
            a
        );
        // Stops are never numbers in a fleet: `17` is a name like any other.
        let (s17, _) = ids.find_or_create(&acme, Kind::Stop, "17").unwrap();
        assert!(s17 >= ALLOCATED);
        // `van-42` and `veh-00042` are different vehicles.
        let v1 = ids
            .find_or_create(&acme, Kind::Vehicle, "van-42")
            .unwrap()
            .0;
        let v2 = ids
            .find_or_create(&acme, Kind::Vehicle, "veh-00042")
            .unwrap()
            .0;
        assert_ne!(v1, v2);
        // Labels: each fleet sees its own names; a v1 client numbers only.
        assert_eq!(ids.label(&acme, Kind::Stop, a, false), "order-17");
        assert_eq!(ids.label(&acme, Kind::Stop, a, true), format!("#{a}"));
        assert_eq!(ids.label(&acme, Kind::Stop, s17, true), "17");
        assert_eq!(ids.label(&globex, Kind::Stop, a, false), format!("#{a}"));
        assert_eq!(ids.label(&acme, Kind::Vehicle, 42, true), "42");
        // `#N` reaches the caller's own ids only, and never makes one.
        assert_eq!(ids.find(&acme, Kind::Stop, &format!("#{a}")), Ok(Some(a)));
        assert_eq!(ids.find(&globex, Kind::Stop, &format!("#{a}")), Ok(None));
        assert!(
            ids.find_or_create(&globex, Kind::Stop, &format!("#{a}"))
                .is_err()
        );
    }

    #[test]
    fn names_are_checked_and_bounded() {
        let ids = Ids::new(2);
        let acme = scope("acme", &[]);
        for bad in ["", "a\nb", "#x", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(
                matches!(ids.find(&acme, Kind::Stop, bad), Err(IdError::Invalid(_))),
                "{bad:?}"
            );
        }
        assert!(
            ids.find(&acme, Kind::Stop, &"é".repeat(MAX_NAME_LEN / 2))
                .is_ok()
        );
        ids.find_or_create(&acme, Kind::Stop, "a").unwrap();
        ids.find_or_create(&acme, Kind::Stop, "b").unwrap();
        assert_eq!(
            ids.find_or_create(&acme, Kind::Stop, "c"),
            Err(IdError::Full(Kind::Stop))
        );
        // Other kinds and fleets have room of their own.
        assert!(ids.find_or_create(&acme, Kind::Vehicle, "c").is_ok());
        assert!(
            ids.find_or_create(&scope("globex", &[]), Kind::Stop, "c")
                .is_ok()
        );
        // Leading zeros, signs and huge numbers are names, not numbers.
        assert_eq!(canonical_number("007"), None);
        assert_eq!(canonical_number("+7"), None);
        assert_eq!(canonical_number("0"), Some(0));
        assert_eq!(canonical_number(&ALLOCATED.to_string()), None);
    }

    #[test]
    fn numbered_stops_of_an_earlier_version_keep_their_numbers() {
        let ids = Ids::new(10);
        let acme = scope("acme", &[[0, 999]]);
        assert!(ids.adopt_number(&acme, Kind::Stop, 42));
        assert_eq!(ids.find(&acme, Kind::Stop, "42"), Ok(Some(42)));
        assert_eq!(ids.label(&acme, Kind::Stop, 42, false), "42");
        // Another fleet's "42" is still its own.
        let globex = scope("globex", &[]);
        assert_eq!(ids.find(&globex, Kind::Stop, "42"), Ok(None));
        assert!(!ids.adopt_number(&acme, Kind::Stop, 42), "already named");
        assert!(!ids.adopt_number(&acme, Kind::Stop, ALLOCATED + 1));
    }

    #[test]
    fn restored_names_keep_their_ids_and_new_ones_follow() {
        let acme = scope("acme", &[]);
        let first = Ids::new(10);
        let (a, new_a) = first.find_or_create(&acme, Kind::Stop, "a").unwrap();
        let (b, new_b) = first.find_or_create(&acme, Kind::Stop, "b").unwrap();
        first.saved(&[new_a.unwrap(), new_b.clone().unwrap()]);
        assert_eq!(
            first.find_or_create(&acme, Kind::Stop, "b").unwrap().1,
            None
        );
        let again = Ids::new(10);
        again.restore(Kind::Stop, b, "b");
        again.restore(Kind::Stop, a, "a");
        assert_eq!(again.find(&acme, Kind::Stop, "a"), Ok(Some(a)));
        let (c, _) = again.find_or_create(&acme, Kind::Stop, "c").unwrap();
        assert!(c > a && c > b);
    }
}
