//! Durable store: LMDB through `heed`, and the group committer that makes a Reply leave only
//! after the leases it grants are on disk. Key layout: `docs/storage.md`.
//!
//! A commit appends its lease changes to a journal database, in order, at its right edge: a
//! few pages per commit, however the leases are scattered over the address space. There are
//! two journals, `journal` and `journal2`, with one sequence of keys across both: commits
//! append to the active one. Once it holds [`JOURNAL_FOLD_AT`] entries, the group committer
//! makes the other active and folds the full one into `leases` (keyed by resource) a slice at a
//! time ([`JOURNAL_FOLD_SLICE_MAX`] entries in key order, riding in the transactions of the
//! next commits), so the fold writes each leaf page it touches once for many leases without
//! holding any commit for long; the last slice empties that journal. When idle it folds all of
//! both at once. Readers see the journals' changes, the older journal's first, on top of
//! `leases`; a change applied twice (folded, and still in its journal) gives what applying it
//! once gives.

use crate::histogram::{Count, Histogram, LatencyUs};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use heed::PutFlags;
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions};
use std::collections::BTreeMap;
use std::fs::File;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tandem_core::lease::{self, Lease, LeaseStore};

/// Most commit jobs folded into one LMDB transaction (one fsync).
pub const COMMIT_BATCH_MAX: usize = 4096;
/// Entries of the active journal at which the group committer switches journals and folds the
/// full one into the lease database ([`JOURNAL_FOLD_SLICE_MAX`] at a time), after releasing the
/// replies of the commit that reached it. A fold writes each leaf page it touches once: the
/// more entries, the more of them share a page. At 32,768 (4,096 before) the folds of 576,000
/// lease changes into a fresh store took 0.87 s in 18 folds (48 ms each) against 1.52 s in 137
/// (11 ms), and the server's CPU per exchange fell by 12 % (`docs/performance.md`).
pub const JOURNAL_FOLD_AT: u64 = 32768;
/// Most journal entries one transaction of a whole fold (idle, at exit, at start) applies
/// (copied into memory first). Twice [`JOURNAL_FOLD_AT`], so that it usually takes a whole
/// journal and empties it at once, which frees its pages without visiting each entry: a fold
/// that leaves entries behind deletes the folded ones one by one, about 2,000 instructions
/// each (a third of the fold).
pub const JOURNAL_FOLD_CHUNK_MAX: usize = 65536;
/// Fewest journal entries a fold transaction is cut down to after a full map.
pub const JOURNAL_FOLD_CHUNK_MIN: usize = 64;
/// Most journal entries one slice of a fold under load applies, in the transaction of a
/// commit (a key's entries are never split between slices). Applying a journal entry costs
/// about 1.5 µs (a fold of 32,768 took 48 ms), so a slice adds a few milliseconds to the
/// commit it rides in, where a whole fold held every commit queued behind it for 50–100 ms.
pub const JOURNAL_FOLD_SLICE_MAX: usize = 2048;
/// Meta key of the server DUID.
pub const META_SERVER_DUID: &[u8] = b"server_duid";
/// Meta key of the store layout version.
pub const META_LAYOUT_VERSION: &[u8] = b"layout_version";
/// Layout version this code writes and reads. 2: lease values may be of version 2 (relay
/// data after the DUID), which a build of layout 1 cannot read. 3: lease values of version 3
/// (the partner version's sequence after the relay data), which a build of layout 2 cannot
/// read. 4: lease changes may wait in the `journal` database, which a build of layout 3 does
/// not read. 5: they may wait in a second journal, `journal2`, which a build of layout 4 does
/// not read. An older store is taken and marked 5 at the first open, so an older build then
/// refuses it at start instead of missing or skipping leases written since.
pub const LAYOUT_VERSION: u32 = 5;
/// Older layout versions this code opens (and upgrades in place).
pub const LAYOUT_VERSIONS_UPGRADED: &[u32] = &[1, 2, 3, 4];

/// Store failures, each saying what the operator can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory cannot be created or written.
    #[error("data dir {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process holds the data directory.
    #[error("data dir {0} is in use by another tandem process (lock file tandem.lock is held)")]
    Locked(PathBuf),
    /// LMDB reported an error.
    #[error("LMDB: {0}")]
    Lmdb(#[from] heed::Error),
    /// A write through a store opened for reading only.
    #[error("the store is open for reading only")]
    ReadOnly,
    /// The store was written by an incompatible version.
    #[error("store layout version {found} is not supported (this build reads {LAYOUT_VERSION})")]
    Layout {
        /// Version found on disk.
        found: u32,
    },
}

/// The LMDB environment with its four databases.
pub struct Store {
    env: Env,
    meta: Database<'static, Bytes, Bytes>,
    leases: Database<'static, Bytes, Bytes>,
    /// Lease changes not yet folded into `leases`, in the order they were committed, in two
    /// journals (`journal`, `journal2`) whose keys never interleave (`None`: a reader of a
    /// store of a layout that has not this one).
    journals: [Option<Database<'static, Bytes, Bytes>>; 2],
    /// Which journal commits append to (changed only under LMDB's writer lock).
    active: AtomicUsize,
    /// Entries in the active journal as of the last write transaction (a hint for when to
    /// fold).
    journal_len: AtomicU64,
    _lock: Option<File>,
    /// Tests: this many of the next group commits fail (as a disk error would).
    #[cfg(test)]
    fail_commits: AtomicU64,
}

/// How much of the LMDB map the store uses ([`Store::map_use`]).
#[derive(Debug, Clone, Copy)]
pub struct MapUse {
    /// In the pages of the lease and meta databases (and LMDB's own).
    pub data_bytes: u64,
    /// In the pages of the two journals: they grow to about twice [`JOURNAL_FOLD_AT`] entries
    /// and a fold empties them, so this swings between folds.
    pub journal_bytes: u64,
    /// The map's size.
    pub map_bytes: u64,
}

/// A fold under way: the entries of the journal that is not active, copied out and put in key
/// order, and how many of them are in `leases` already. Held by the group committer, which
/// applies a slice with each commit ([`Store::commit_folding`]).
pub struct FoldPlan {
    /// Which journal is folded.
    journal: usize,
    /// The entries, back to back.
    bytes: Vec<u8>,
    /// (start, end) of each entry in `bytes`, in key order, a key's entries in journal order.
    order: Vec<(u32, u32)>,
    /// Entries applied so far (a slice boundary: never inside one key's entries).
    done: usize,
    /// Entries that could not be read, skipped.
    corrupt: u64,
    /// Time spent applying slices so far (not the commits' own appends and fsyncs).
    pub spent: Duration,
}

impl FoldPlan {
    /// Entries in the plan.
    pub fn len(&self) -> usize {
        self.order.len()
    }
    /// Whether the plan holds no entries.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
    /// The entry at `i` of the key order.
    fn entry(&self, i: usize) -> &[u8] {
        let (a, b) = self.order[i];
        &self.bytes[a as usize..b as usize]
    }
    /// The end of the slice after `done`: at most `max` entries further, moved back to the
    /// start of a key's entries (or on past them, if one key has more than `max`).
    fn slice_end(&self, max: usize) -> usize {
        let len = self.order.len();
        let mut end = (self.done + max.max(1)).min(len);
        if end == len {
            return end;
        }
        let key_at = |i: usize| self.entry(i).get(1..1 + lease::KEY_LEN);
        let boundary = key_at(end);
        let mut back = end;
        while back > self.done && key_at(back - 1) == boundary {
            back -= 1;
        }
        if back > self.done {
            return back;
        }
        while end < len && key_at(end) == boundary {
            end += 1;
        }
        end
    }
}

/// What a commit did to the fold under way.
#[derive(Debug)]
pub enum FoldProgress {
    /// No fold rode in it.
    None,
    /// A slice of the fold was applied; the fold goes on.
    Slice,
    /// The last slice was applied and the folded journal emptied.
    Done,
    /// The slice could not be applied (a full map, most likely): the commit went through
    /// without it, and the fold should be given up (its journal stays and is folded later).
    Failed(StoreError),
}

/// Journal entry tag: a lease record written (the record follows the key).
const JOURNAL_WRITE: u8 = 1;
/// Journal entry tag: a lease record forgotten (the forgotten version's `seq` follows the key).
const JOURNAL_FORGET: u8 = 2;

/// One journal entry, as `Store::commit` and `Store::forget` append them: the tag, the lease
/// key, then the record or the forgotten `seq` (8 bytes, little-endian).
#[derive(Debug, Clone, Copy)]
enum Change<'a> {
    /// Store `value` unless a newer version is stored.
    Write(&'a [u8]),
    /// Delete the record if the stored version is no newer than `seq`.
    Forget(u64),
}

/// Writes the journal entry of a lease record written ([`Store::commit`]) into `buf`.
fn write_entry(l: &Lease, buf: &mut Vec<u8>) {
    buf.push(JOURNAL_WRITE);
    buf.extend_from_slice(&l.key());
    l.encode_value(buf);
}

/// A lease key (kind, then address) as integers that order exactly as its bytes do.
fn sort_key(k: &[u8]) -> (u8, u128) {
    let mut addr = [0u8; 16];
    addr.copy_from_slice(&k[1..]);
    (k[0], u128::from_be_bytes(addr))
}

/// Splits a journal entry into its lease key and change; `None` if it cannot be read.
fn journal_entry(entry: &[u8]) -> Option<(&[u8], Change<'_>)> {
    let key = entry.get(1..1 + lease::KEY_LEN)?;
    let rest = &entry[1 + lease::KEY_LEN..];
    match entry[0] {
        JOURNAL_WRITE => Some((key, Change::Write(rest))),
        JOURNAL_FORGET => Some((
            key,
            Change::Forget(u64::from_le_bytes(rest.try_into().ok()?)),
        )),
        _ => None,
    }
}

/// What a change does to the stored record `stored`: the store's ordering rule
/// ([`lease::supersedes_seq`]) applied when the journal is folded or read, exactly as it was
/// applied when changes went straight to the lease database.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// The change's record replaces whatever is stored.
    Put,
    /// The stored record goes.
    Delete,
    /// The stored record stays as it is.
    Keep,
}

fn outcome(stored: Option<&[u8]>, change: Change<'_>) -> Outcome {
    match change {
        // A record without a readable sequence is replaced by any write.
        Change::Write(v) => match lease::value_seq(v) {
            Some(seq) if stored.is_none_or(|s| lease::supersedes_seq(lease::value_seq(s), seq)) => {
                Outcome::Put
            }
            _ => Outcome::Keep,
        },
        Change::Forget(seq) => {
            if stored.and_then(lease::value_seq).is_some_and(|s| s <= seq) {
                Outcome::Delete
            } else {
                Outcome::Keep
            }
        }
    }
}

/// Counts from loading the lease database at start.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadStats {
    /// Records decoded and handed to the caller.
    pub loaded: u64,
    /// Records that could not be decoded (left on disk, logged).
    pub corrupt: u64,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`. `sync = false` skips fsync on commit:
    /// faster, but a crash may lose granted leases; only for benchmarks.
    pub fn open(dir: &Path, map_size_mib: usize, sync: bool) -> Result<Store, StoreError> {
        let dd = |source| StoreError::DataDir {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dd)?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("tandem.lock"))
            .map_err(dd)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(dir.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(dd(e)),
        }
        let mut opts = EnvOpenOptions::new();
        opts.map_size(map_size_mib << 20).max_dbs(4);
        if !sync {
            // SAFETY: NO_SYNC only weakens durability (a crash may lose the last commits); it
            // cannot corrupt the memory map. The operator asked for it explicitly.
            #[allow(unsafe_code)]
            unsafe {
                opts.flags(EnvFlags::NO_SYNC);
            }
        }
        // SAFETY: the map is only modified through this Env; the exclusive lock file above
        // stops a second tandem process from opening the same directory, and LMDB's own lock
        // protects against other readers.
        #[allow(unsafe_code)]
        let env = unsafe { opts.open(dir)? };
        let wtxn = env.write_txn()?;
        let (meta, leases, journal, journal2) = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_, StoreError> {
                let meta: Database<Bytes, Bytes> = dbo.create_database(wtxn, Some("meta"))?;
                let leases: Database<Bytes, Bytes> = dbo.create_database(wtxn, Some("leases"))?;
                let journal: Database<Bytes, Bytes> = dbo.create_database(wtxn, Some("journal"))?;
                let journal2: Database<Bytes, Bytes> =
                    dbo.create_database(wtxn, Some("journal2"))?;
                Ok(CommitOrAbort::<_, ()>::Commit((
                    meta, leases, journal, journal2,
                )))
            })?
            .unwrap_commit();
        let mut wtxn = env.write_txn()?;
        match meta.get(&wtxn, META_LAYOUT_VERSION)? {
            None => meta.put(
                &mut wtxn,
                META_LAYOUT_VERSION,
                &LAYOUT_VERSION.to_le_bytes(),
            )?,
            Some(v) => {
                let found = v.try_into().map(u32::from_le_bytes).unwrap_or(u32::MAX);
                if LAYOUT_VERSIONS_UPGRADED.contains(&found) {
                    meta.put(
                        &mut wtxn,
                        META_LAYOUT_VERSION,
                        &LAYOUT_VERSION.to_le_bytes(),
                    )?;
                    tracing::info!(
                        from = found,
                        to = LAYOUT_VERSION,
                        "store layout upgraded; builds of the older layout will refuse this store"
                    );
                } else if found != LAYOUT_VERSION {
                    return Err(StoreError::Layout { found });
                }
            }
        }
        wtxn.commit()?;
        let store = Store {
            env,
            meta,
            leases,
            journals: [Some(journal), Some(journal2)],
            active: AtomicUsize::new(0),
            journal_len: AtomicU64::new(0),
            _lock: Some(lock),
            #[cfg(test)]
            fail_commits: AtomicU64::new(0),
        };
        // What the last run committed and did not fold (it stopped or crashed): folded now.
        // A fold that fails (a full map) stops nothing: readers apply the journal, and the
        // group committer tries again.
        match store.fold_journal() {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                entries = n,
                "store: lease changes the last run left in the journal folded in"
            ),
            Err(e) => tracing::warn!(
                error = %e,
                "store: cannot fold the journal the last run left; its changes are read from it until a fold succeeds (raise server.map_size_mib if the map is full)"
            ),
        }
        store.continue_after_newest()?;
        Ok(store)
    }

    /// Makes the journal that holds the newest entry, if any is left (a fold that failed at
    /// start), the active one: commits go on after that entry, so the two journals' keys never
    /// interleave.
    fn continue_after_newest(&self) -> Result<(), StoreError> {
        let rtxn = self.env.read_txn()?;
        let order = self.journals_in_order(&rtxn)?;
        if let Some(&newest) = order.last()
            && let Some(db) = &self.journals[newest]
        {
            let len = db.len(&rtxn)?;
            if len > 0 {
                self.active.store(newest, Ordering::Relaxed);
                self.journal_len.store(len, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Opens an existing store read-only, beside a running server (LMDB readers never block
    /// the writer). For operator tools such as `tandem leases`; it cannot commit.
    pub fn open_reader(dir: &Path) -> Result<Store, StoreError> {
        if !dir.join("data.mdb").exists() {
            return Err(StoreError::DataDir {
                path: dir.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no store here (data.mdb missing)",
                ),
            });
        }
        let mut opts = EnvOpenOptions::new();
        opts.max_dbs(4);
        // SAFETY: READ_ONLY only forbids writes through this Env; the writer is another process
        // coordinating with us through LMDB's own lock file.
        #[allow(unsafe_code)]
        let env = unsafe {
            opts.flags(EnvFlags::READ_ONLY);
            opts.open(dir)?
        };
        let rtxn = env.read_txn()?;
        let (meta, leases, journal, journal2) = env
            .open_databases_and_commit(rtxn, |dbo, rtxn| -> Result<_, StoreError> {
                let meta: Option<Database<Bytes, Bytes>> = dbo.open_database(rtxn, Some("meta"))?;
                let leases: Option<Database<Bytes, Bytes>> =
                    dbo.open_database(rtxn, Some("leases"))?;
                let journal: Option<Database<Bytes, Bytes>> =
                    dbo.open_database(rtxn, Some("journal"))?;
                let journal2: Option<Database<Bytes, Bytes>> =
                    dbo.open_database(rtxn, Some("journal2"))?;
                Ok(CommitOrAbort::<_, ()>::Commit((
                    meta, leases, journal, journal2,
                )))
            })?
            .unwrap_commit();
        match (meta, leases) {
            (Some(meta), Some(leases)) => {
                let store = Store {
                    env,
                    meta,
                    leases,
                    journals: [journal, journal2],
                    active: AtomicUsize::new(0),
                    journal_len: AtomicU64::new(0),
                    _lock: None,
                    #[cfg(test)]
                    fail_commits: AtomicU64::new(0),
                };
                // A newer layout may keep leases where this build does not look.
                if let Some(v) = store.get_meta(META_LAYOUT_VERSION)? {
                    let found = v.try_into().map(u32::from_le_bytes).unwrap_or(u32::MAX);
                    if found > LAYOUT_VERSION {
                        return Err(StoreError::Layout { found });
                    }
                }
                Ok(store)
            }
            _ => Err(StoreError::DataDir {
                path: dir.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a tandem store"),
            }),
        }
    }

    /// The server DUID, if one was stored.
    pub fn server_duid(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let rtxn = self.env.read_txn()?;
        Ok(self.meta.get(&rtxn, META_SERVER_DUID)?.map(|d| d.to_vec()))
    }

    /// The server DUID, generated by `make` and stored durably the first time.
    pub fn server_duid_or_create(
        &self,
        make: impl FnOnce() -> Vec<u8>,
    ) -> Result<Vec<u8>, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        if let Some(d) = self.meta.get(&wtxn, META_SERVER_DUID)? {
            return Ok(d.to_vec());
        }
        let d = make();
        self.meta.put(&mut wtxn, META_SERVER_DUID, &d)?;
        wtxn.commit()?;
        Ok(d)
    }

    /// How much of the map the data uses: bytes in the pages of the lease and meta databases,
    /// bytes in the pages of the two journals, and the map size in bytes. Freed pages (LMDB's
    /// free list) are not counted: they are reused.
    pub fn map_use(&self) -> MapUse {
        let info = self.env.info();
        let page = self.env.unnamed_database_stat().page_size as u64;
        let rtxn = self.env.read_txn().ok();
        let pages = |dbs: &[Option<&Database<'static, Bytes, Bytes>>]| {
            rtxn.as_ref().map_or(0, |rtxn| {
                dbs.iter()
                    .flatten()
                    .filter_map(|db| db.stat(rtxn).ok())
                    .map(|st| (st.branch_pages + st.leaf_pages + st.overflow_pages) as u64)
                    .sum::<u64>()
            })
        };
        MapUse {
            // The two meta pages and the main database's page count with the data.
            data_bytes: (pages(&[Some(&self.leases), Some(&self.meta)]) + 3) * page,
            journal_bytes: pages(&[self.journals[0].as_ref(), self.journals[1].as_ref()]) * page,
            map_bytes: info.map_size as u64,
        }
    }

    /// Stores `value` under `key` in the meta database, replacing any previous value, in one
    /// write transaction that is committed (fsync unless opened without sync) before returning.
    pub fn put_meta(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut wtxn = self.env.write_txn()?;
        self.meta.put(&mut wtxn, key, value)?;
        wtxn.commit()?;
        Ok(())
    }

    /// Deletes `key` from the meta database (committed before returning); whether it was there.
    pub fn delete_meta(&self, key: &[u8]) -> Result<bool, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        let gone = self.meta.delete(&mut wtxn, key)?;
        wtxn.commit()?;
        Ok(gone)
    }

    /// A meta record, if stored.
    pub fn get_meta(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let rtxn = self.env.read_txn()?;
        Ok(self.meta.get(&rtxn, key)?.map(|v| v.to_vec()))
    }

    /// Calls `f` for every stored lease, in key order, the journal's changes applied;
    /// corrupt records are counted and reported to `bad`.
    pub fn load_leases(
        &self,
        mut f: impl FnMut(Lease),
        mut bad: impl FnMut(&[u8], lease::DecodeError),
    ) -> Result<LoadStats, StoreError> {
        let rtxn = self.env.read_txn()?;
        let mut st = LoadStats::default();
        let mut emit = |k: &[u8], v: &[u8]| match Lease::decode(k, v) {
            Ok(l) => {
                st.loaded += 1;
                f(l)
            }
            Err(e) => {
                st.corrupt += 1;
                bad(k, e)
            }
        };
        // What the journal changes, by key (`None`: deleted), merged into the walk of the
        // lease database in key order.
        let overlay = self.journal_overlay(&rtxn)?;
        let mut pending = overlay.iter().peekable();
        for item in self.leases.iter(&rtxn)? {
            let (k, v) = item?;
            while let Some((ok, ov)) = pending.next_if(|(ok, _)| ok.as_slice() < k) {
                if let Some(ov) = ov {
                    emit(ok, ov);
                }
            }
            match pending.next_if(|(ok, _)| ok.as_slice() == k) {
                Some((_, Some(ov))) => emit(k, ov),
                Some((_, None)) => {}
                None => emit(k, v),
            }
        }
        for (ok, ov) in pending {
            if let Some(ov) = ov {
                emit(ok, ov);
            }
        }
        Ok(st)
    }

    /// What the journal does to the records it names, as of `rtxn`: each key's resulting
    /// record (`None`: none), for keys whose record it changes.
    fn journal_overlay(
        &self,
        rtxn: &heed::RoTxn,
    ) -> Result<BTreeMap<Vec<u8>, Option<Vec<u8>>>, StoreError> {
        let mut overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
        for i in self.journals_in_order(rtxn)? {
            let Some(journal) = &self.journals[i] else {
                continue;
            };
            for item in journal.iter(rtxn)? {
                let (_, entry) = item?;
                let Some((k, change)) = journal_entry(entry) else {
                    tracing::warn!(entry = ?entry, "store: unreadable journal entry skipped");
                    continue;
                };
                let result = match overlay.get(k) {
                    Some(v) => outcome(v.as_deref(), change),
                    None => outcome(self.leases.get(rtxn, k)?, change),
                };
                match (result, change) {
                    (Outcome::Put, Change::Write(v)) => {
                        overlay.insert(k.to_vec(), Some(v.to_vec()));
                    }
                    (Outcome::Delete, _) => {
                        overlay.insert(k.to_vec(), None);
                    }
                    _ => {}
                }
            }
        }
        Ok(overlay)
    }

    /// Which journals this store has, the one with the older entries first (their keys never
    /// interleave: one of them is empty whenever the other becomes active).
    fn journals_in_order(&self, txn: &heed::RoTxn) -> Result<Vec<usize>, StoreError> {
        let mut v: Vec<(Option<Vec<u8>>, usize)> = Vec::new();
        for (i, db) in self.journals.iter().enumerate() {
            if let Some(db) = db {
                v.push((db.first(txn)?.map(|(k, _)| k.to_vec()), i));
            }
        }
        // Empty journals first (nothing to apply), then by first key.
        v.sort();
        Ok(v.into_iter().map(|(_, i)| i).collect())
    }

    /// Appends `entries` (each from `fill`, given the buffer to write it into) to the active
    /// journal in one transaction and commits it (fsync unless opened without sync).
    fn append<'a, T: 'a>(
        &self,
        entries: impl IntoIterator<Item = &'a T>,
        fill: impl FnMut(&T, &mut Vec<u8>),
    ) -> Result<usize, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        let n = self.append_in(&mut wtxn, entries, fill)?;
        wtxn.commit()?;
        Ok(n)
    }

    /// The appending of [`Store::append`], in `wtxn`.
    // heed marks a cursor's puts unsafe (a value read through the cursor must not be held
    // across one); see the SAFETY note in the loop.
    #[allow(unsafe_code)]
    fn append_in<'a, T: 'a>(
        &self,
        wtxn: &mut heed::RwTxn,
        entries: impl IntoIterator<Item = &'a T>,
        mut fill: impl FnMut(&T, &mut Vec<u8>),
    ) -> Result<usize, StoreError> {
        let active = self.active.load(Ordering::Relaxed);
        let journal = self.journals[active].as_ref().ok_or(StoreError::ReadOnly)?;
        // Keys are 8 bytes, big-endian, one sequence across both journals. After one of
        // another shape (not written by this code) the next key is u64::MAX, and a second
        // entry at the same key fails the append (at the right edge, keys must rise) until a
        // fold empties the journal.
        let mut next = 0u64;
        for db in self.journals.iter().flatten() {
            if let Some((k, _)) = db.last(wtxn)? {
                let after = k
                    .try_into()
                    .ok()
                    .and_then(|k| u64::from_be_bytes(k).checked_add(1))
                    .unwrap_or(u64::MAX);
                next = next.max(after);
            }
        }
        let mut buf = Vec::with_capacity(256);
        let mut n = 0;
        // One cursor for the whole batch: a put of its own sets up a cursor per entry, which
        // was about a third of an append's instructions.
        let mut cursor = journal.iter_mut(wtxn)?;
        for e in entries {
            buf.clear();
            fill(e, &mut buf);
            // The journal's keys rise, so each entry goes at its right edge: LMDB fills pages
            // in order instead of splitting them.
            // SAFETY: nothing read through this cursor (or from the journal) is held across
            // the put; key and value are our own buffers.
            unsafe {
                cursor.put_current_with_options::<Bytes>(
                    PutFlags::APPEND,
                    &next.to_be_bytes(),
                    &buf,
                )?
            };
            next = next.saturating_add(1);
            n += 1;
        }
        drop(cursor);
        self.journal_len
            .store(journal.len(wtxn)?, Ordering::Relaxed);
        Ok(n)
    }

    /// Makes every lease durable in one transaction (fsync unless opened without sync), as
    /// journal entries; returns how many it took. A write whose sequence is older than the
    /// stored one never replaces it: the newer change wins whatever order workers handed them
    /// in (applied when the journal is read or folded).
    pub fn commit<'a>(
        &self,
        writes: impl IntoIterator<Item = &'a Lease>,
    ) -> Result<usize, StoreError> {
        self.append(writes, write_entry)
    }

    /// Deletes the records of forgotten leases (`server.keep_ended_secs`) in one transaction,
    /// each only if the stored version is no newer than the one forgotten: a change made since
    /// stays. Returns how many it took (the deletions happen when the journal is folded).
    pub fn forget<'a>(
        &self,
        forgotten: impl IntoIterator<Item = &'a Lease>,
    ) -> Result<usize, StoreError> {
        self.append(forgotten, |l, buf| {
            buf.push(JOURNAL_FORGET);
            buf.extend_from_slice(&l.key());
            buf.extend_from_slice(&l.seq.to_le_bytes());
        })
    }

    /// [`Store::commit`], with the next slice of `plan` (at most `slice_max` entries) applied
    /// in the same transaction, and the folded journal emptied with the last slice. If the
    /// transaction fails with the slice, the writes are committed again without it
    /// ([`FoldProgress::Failed`]): a fold never costs a client its commit.
    pub fn commit_folding<'a, W>(
        &self,
        writes: W,
        plan: Option<&mut FoldPlan>,
        slice_max: usize,
    ) -> Result<(usize, FoldProgress), StoreError>
    where
        W: IntoIterator<Item = &'a Lease> + Clone,
    {
        #[cfg(test)]
        if self
            .fail_commits
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Lmdb(heed::Error::Io(std::io::Error::other(
                "injected by a test",
            ))));
        }
        let Some(plan) = plan else {
            return Ok((self.append(writes, write_entry)?, FoldProgress::None));
        };
        let mut spent = Duration::ZERO;
        let attempt = (|| -> Result<(usize, usize, u64), StoreError> {
            let mut wtxn = self.env.write_txn()?;
            let n = self.append_in(&mut wtxn, writes.clone(), write_entry)?;
            // What the slice adds to the commit (the fsync is the commit's anyway).
            let started = Instant::now();
            let end = plan.slice_end(slice_max);
            let mut corrupt = 0;
            for i in plan.done..end {
                if !self.apply_entry(&mut wtxn, plan.entry(i))? {
                    corrupt += 1;
                }
            }
            if end == plan.len() {
                let journal = self.journals[plan.journal]
                    .as_ref()
                    .ok_or(StoreError::ReadOnly)?;
                journal.clear(&mut wtxn)?;
            }
            spent = started.elapsed();
            wtxn.commit()?;
            Ok((n, end, corrupt))
        })();
        plan.spent += spent;
        match attempt {
            Ok((n, end, corrupt)) => {
                plan.done = end;
                plan.corrupt += corrupt;
                if end < plan.len() {
                    return Ok((n, FoldProgress::Slice));
                }
                if plan.corrupt > 0 {
                    tracing::warn!(
                        entries = plan.corrupt,
                        "store: unreadable journal entries skipped"
                    );
                }
                Ok((n, FoldProgress::Done))
            }
            Err(e) => {
                let n = self.append(writes, write_entry)?;
                Ok((n, FoldProgress::Failed(e)))
            }
        }
    }

    /// Starts a fold under load: the journal that is not active if it holds anything (a fold
    /// given up left it), else the active one, which stops being active (commits go on into
    /// the other, which is empty). Its entries are copied out, in key order, under the writer
    /// lock, so that no commit is in the journal half. `None` if there is nothing to fold.
    pub fn fold_start(&self) -> Result<Option<FoldPlan>, StoreError> {
        let wtxn = self.env.write_txn()?;
        let active = self.active.load(Ordering::Relaxed);
        let idle = 1 - active;
        let (Some(a), Some(b)) = (&self.journals[active], &self.journals[idle]) else {
            return Err(StoreError::ReadOnly);
        };
        let (journal, db) = if b.len(&wtxn)? > 0 {
            (idle, b)
        } else {
            // Changed under the writer lock: every commit before this one went to the old
            // journal, every one after goes to the other.
            self.active.store(idle, Ordering::Relaxed);
            self.journal_len.store(0, Ordering::Relaxed);
            (active, a)
        };
        // The entries, in the map while the transaction lives.
        let mut entries = Vec::new();
        for item in db.iter(&wtxn)? {
            entries.push(item?.1);
        }
        if entries.is_empty() {
            return Ok(None);
        }
        // Key order, each key's entries in journal order (a stable sort); unreadable entries
        // (no key) first. The keys are taken out once as integers that order as their bytes
        // do: comparing them in place (a memcmp each time) was most of the time of this step.
        entries.sort_by_cached_key(|e| e.get(1..1 + lease::KEY_LEN).map(sort_key));
        // Copied out in that order, so that the slices read them front to back: read in key
        // order out of journal order, each entry was a cache miss that the B-tree work between
        // two of them left nothing to overlap with (most of the time of applying one, outside
        // LMDB). This copy's reads are independent and overlap.
        let mut bytes = Vec::with_capacity(entries.iter().map(|e| e.len()).sum());
        let mut order = Vec::with_capacity(entries.len());
        for e in entries {
            let start = bytes.len() as u32;
            bytes.extend_from_slice(e);
            order.push((start, bytes.len() as u32));
        }
        // The writer lock is held while the entries are sorted and copied, and nothing is
        // written: the other writers (the partner link's thread, the reclaimer) wait a few
        // milliseconds once a fold, which saves the committer a second copy of every entry.
        wtxn.abort();
        Ok(Some(FoldPlan {
            journal,
            bytes,
            order,
            done: 0,
            corrupt: 0,
            spent: Duration::ZERO,
        }))
    }

    /// Applies one journal entry to the lease database in `wtxn`; false if it cannot be read
    /// (skipped).
    fn apply_entry(&self, wtxn: &mut heed::RwTxn, entry: &[u8]) -> Result<bool, StoreError> {
        let Some((k, change)) = journal_entry(entry) else {
            return Ok(false);
        };
        match change {
            Change::Write(v) if lease::value_seq(v).is_some() => {
                // One B-tree search for a new record: it is written unless the key is there,
                // in which case the stored version comes back and decides.
                let stored = self.leases.get_or_put(wtxn, k, v)?;
                if stored.is_some() && outcome(stored, change) == Outcome::Put {
                    self.leases.put(wtxn, k, v)?;
                }
                Ok(true)
            }
            // Readers keep what is stored for a write without a sequence; so does this.
            Change::Write(_) => Ok(false),
            Change::Forget(_) => {
                if outcome(self.leases.get(wtxn, k)?, change) == Outcome::Delete {
                    self.leases.delete(wtxn, k)?;
                }
                Ok(true)
            }
        }
    }

    /// Whether the active journal holds [`JOURNAL_FOLD_AT`] entries or more (as of the last
    /// write).
    pub fn fold_due(&self) -> bool {
        self.journal_len.load(Ordering::Relaxed) >= JOURNAL_FOLD_AT
    }

    /// Whether either journal holds anything to fold.
    pub fn journal_pending(&self) -> bool {
        let Ok(rtxn) = self.env.read_txn() else {
            return true;
        };
        self.journals
            .iter()
            .flatten()
            .any(|db| db.len(&rtxn).map_or(true, |n| n > 0))
    }

    /// Applies the oldest entries of journal `which`, at most `max`, to the lease database in
    /// journal order and deletes them from the journal, in one transaction (fsync unless opened
    /// without sync); returns how many entries it folded. Folding a prefix keeps the order:
    /// readers apply what is left on top, as before.
    fn fold_journal_some(&self, which: usize, max: usize) -> Result<u64, StoreError> {
        let journal = self.journals[which].as_ref().ok_or(StoreError::ReadOnly)?;
        let mut wtxn = self.env.write_txn()?;
        // The entries are copied out first: the lease database cannot be written while the
        // journal is being read in the same transaction.
        let mut chunk: Vec<u8> = Vec::new();
        let mut ends: Vec<usize> = Vec::with_capacity(max.min(JOURNAL_FOLD_CHUNK_MAX));
        let mut last: Option<Vec<u8>> = None;
        for item in journal.iter(&wtxn)?.take(max) {
            let (k, entry) = item?;
            chunk.extend_from_slice(entry);
            ends.push(chunk.len());
            last = Some(k.to_vec());
        }
        let Some(last) = last else {
            return Ok(0);
        };
        let mut corrupt = 0u64;
        let mut start = 0;
        for &end in &ends {
            if !self.apply_entry(&mut wtxn, &chunk[start..end])? {
                corrupt += 1;
            }
            start = end;
        }
        if ends.len() as u64 == journal.len(&wtxn)? {
            // All of it: emptying the database frees its pages without visiting each entry.
            journal.clear(&mut wtxn)?;
        } else {
            journal.delete_range(&mut wtxn, &(Bound::Unbounded, Bound::Included(&last[..])))?;
        }
        let left = journal.len(&wtxn)?;
        wtxn.commit()?;
        if which == self.active.load(Ordering::Relaxed) {
            self.journal_len.store(left, Ordering::Relaxed);
        }
        if corrupt > 0 {
            tracing::warn!(
                entries = corrupt,
                "store: unreadable journal entries skipped"
            );
        }
        Ok(ends.len() as u64)
    }

    /// Folds both journals whole, the older first (as they were when called: entries other
    /// threads append meanwhile may stay), [`JOURNAL_FOLD_CHUNK_MAX`] entries per transaction;
    /// after a full map, in smaller transactions down to [`JOURNAL_FOLD_CHUNK_MIN`] (a fold
    /// copies every leaf page it changes, and the pages it frees are free only once it has
    /// committed). Returns how many entries it folded.
    pub fn fold_journal(&self) -> Result<u64, StoreError> {
        if self.journals.iter().any(Option::is_none) {
            return Err(StoreError::ReadOnly);
        }
        let order = {
            let rtxn = self.env.read_txn()?;
            self.journals_in_order(&rtxn)?
        };
        let mut folded = 0;
        for which in order {
            folded += self.fold_journal_whole(which)?;
        }
        Ok(folded)
    }

    /// Folds journal `which` whole (see [`Store::fold_journal`]).
    fn fold_journal_whole(&self, which: usize) -> Result<u64, StoreError> {
        let mut left = match &self.journals[which] {
            Some(journal) => {
                let rtxn = self.env.read_txn()?;
                journal.len(&rtxn)?
            }
            None => return Err(StoreError::ReadOnly),
        };
        let mut chunk = JOURNAL_FOLD_CHUNK_MAX;
        let mut folded = 0;
        while left > 0 {
            match self.fold_journal_some(which, chunk.min(left as usize)) {
                Ok(0) => break,
                Ok(n) => {
                    folded += n;
                    left = left.saturating_sub(n);
                }
                Err(StoreError::Lmdb(heed::Error::Mdb(heed::MdbError::MapFull)))
                    if chunk > JOURNAL_FOLD_CHUNK_MIN =>
                {
                    chunk /= 2
                }
                Err(e) => return Err(e),
            }
        }
        Ok(folded)
    }

    /// Reads one lease, the journal's changes applied (tests, operator tools).
    pub fn get(
        &self,
        kind: tandem_core::config::ResourceKind,
        addr: std::net::Ipv6Addr,
    ) -> Result<Option<Lease>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let k = lease::key(kind, addr);
        // The journal's word on this key, if it has one; else the lease database's.
        let record = match self.journal_overlay(&rtxn)?.remove(&k[..]) {
            Some(r) => r,
            None => self.leases.get(&rtxn, &k)?.map(<[u8]>::to_vec),
        };
        Ok(record.and_then(|v| Lease::decode(&k, &v).ok()))
    }
}

/// The server's store is a [`LeaseStore`]: one LMDB transaction per batch.
impl LeaseStore for &Store {
    type Error = StoreError;
    fn commit_leases(
        &mut self,
        writes: &mut dyn Iterator<Item = &Lease>,
    ) -> Result<usize, StoreError> {
        self.commit(writes)
    }
}

/// One unit of work for the group committer: lease writes and what to release once they are
/// durable (typically a Reply to send).
pub struct CommitJob<R> {
    /// Leases to store.
    pub writes: Vec<Lease>,
    /// Released to the sink after the commit that stores `writes` succeeded.
    pub then: Option<R>,
    /// Hand `writes` to [`AfterCommit::written`] (lease changes the failover partner must
    /// hear of); false for records that only note what the partner already acknowledged.
    pub announce: bool,
}

/// Receives what was waiting for a commit, once it is durable.
pub trait AfterCommit<R>: Send {
    /// Called with every job's `then` of one committed batch, in arrival order.
    fn durable(&mut self, released: &mut Vec<R>);
    /// Called when a commit failed: nothing in `dropped` may be sent.
    fn failed(&mut self, dropped: &mut Vec<R>, error: &StoreError);
    /// Called after a successful commit, before [`AfterCommit::durable`], with every lease it
    /// wrote (the failover partner thread hears of them here).
    fn written(&mut self, _leases: &mut dyn Iterator<Item = &Lease>) {}
    /// Called after a successful commit, before [`AfterCommit::durable`], once per job with
    /// what it wrote and its `then` (the server logs each lease change here: off the worker,
    /// and only once it is durable).
    fn job_written(&mut self, _writes: &[Lease], _then: Option<&R>) {}
}

impl<R, S: AfterCommit<R>> AfterCommit<R> for &mut S {
    fn durable(&mut self, r: &mut Vec<R>) {
        (**self).durable(r)
    }
    fn failed(&mut self, r: &mut Vec<R>, e: &StoreError) {
        (**self).failed(r, e)
    }
    fn written(&mut self, leases: &mut dyn Iterator<Item = &Lease>) {
        (**self).written(leases)
    }
    fn job_written(&mut self, writes: &[Lease], then: Option<&R>) {
        (**self).job_written(writes, then)
    }
}

/// Group commit counters (a value, merged at the edge).
#[derive(Debug, Default, Clone, Copy)]
pub struct CommitStats {
    /// Transactions committed.
    pub commits: u64,
    /// Lease changes committed (into the journal: one that a newer stored change supersedes
    /// is counted here and skipped when the journal is folded).
    pub leases: u64,
    /// Jobs (typically replies) released.
    pub jobs: u64,
    /// Tries of a group commit that failed ([`CommitRetry`]: each failed batch is tried
    /// again until it is stored or the committer gives up).
    pub failures: u64,
    /// Leases written per commit.
    pub batch_leases: Histogram<Count>,
    /// Time of each commit, its fsync included, in microseconds.
    pub commit_us: Histogram<LatencyUs>,
    /// Leases written, by the state they were written in ([`LeaseState`] order).
    pub leases_by_state: [u64; LEASE_STATES],
    /// Journal folds into the lease database.
    pub folds: u64,
    /// Journal folds that failed (the journal stays and is folded later).
    pub fold_failures: u64,
    /// Time of each journal fold in microseconds: under load, what copying its entries out and
    /// its slices added to the commits they rode in; when idle, the whole fold with its fsync.
    pub fold_us: Histogram<LatencyUs>,
    /// The committer gave up: its commits failed for [`CommitRetry::give_up_after`], so the
    /// lease table in memory may be ahead of the disk and the server must stop.
    pub gave_up: bool,
}

/// How many lease states there are (the length of [`CommitStats::leases_by_state`]).
pub const LEASE_STATES: usize = 5;

/// Index of `s` in [`CommitStats::leases_by_state`].
pub fn lease_state_index(s: lease::LeaseState) -> usize {
    use lease::LeaseState::*;
    match s {
        Offered => 0,
        Active => 1,
        Released => 2,
        Declined => 3,
        Expired => 4,
    }
}

/// Runs the group committer until every sender of `rx` is gone, or until it gives up on a store
/// whose commits keep failing ([`CommitRetry`], [`CommitStats::gave_up`]): takes the first waiting job,
/// under load waits until `min_interval` has passed since the last commit started ([`Pace`]),
/// then takes everything else queued (up to [`COMMIT_BATCH_MAX`]), commits all in one transaction,
/// and hands their `then` values to `sink`. Then, if the journal is due
/// ([`Store::fold_due`]), or nothing came for `tick_every` and the journal holds anything, it
/// folds the journal. `committed` runs after every successful commit (before the replies are
/// released); `tick` runs about every `tick_every` with the current stats, for periodic
/// logging.
#[allow(clippy::too_many_arguments)]
pub fn run_group_commit<R, S: AfterCommit<R>>(
    store: &Store,
    rx: Receiver<CommitJob<R>>,
    mut sink: S,
    min_interval: Duration,
    tick_every: Duration,
    retry: CommitRetry,
    mut committed: impl FnMut(),
    mut tick: impl FnMut(&CommitStats),
) -> CommitStats {
    let mut stats = CommitStats::default();
    let mut failing: Option<Failing> = None;
    let mut jobs: Vec<CommitJob<R>> = Vec::with_capacity(COMMIT_BATCH_MAX);
    let mut released: Vec<R> = Vec::with_capacity(COMMIT_BATCH_MAX);
    let mut last_tick = std::time::Instant::now();
    let mut pace = Pace::new(min_interval);
    let mut slow = SlowCommits::default();
    let mut folder = Folder {
        after: Instant::now(),
        tick_every,
        plan: None,
    };
    loop {
        // A failed batch waiting to be tried again: straight to it, with what is queued
        // (no wait for more, no idle fold on a store that is failing).
        if failing.is_none() {
            match rx.recv_timeout(tick_every) {
                Ok(j) => {
                    jobs.push(j);
                    // Sleeping rather than waiting on the queue: a worker's send then wakes
                    // nobody. A full batch already waiting gains nothing from the wait.
                    if let Some(due) = pace.due()
                        && rx.len() + 1 < COMMIT_BATCH_MAX
                    {
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    if folder.plan.is_some() || store.journal_pending() {
                        folder.fold_all(store, &mut stats);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        while jobs.len() < COMMIT_BATCH_MAX {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if !jobs.is_empty() {
            let started = Instant::now();
            pace.started(started, jobs.len());
            let result = store
                .commit_folding(
                    jobs.iter().flat_map(|j| j.writes.iter()),
                    folder.plan.as_mut(),
                    JOURNAL_FOLD_SLICE_MAX,
                )
                .map(|(n, progress)| {
                    folder.progress(progress, &mut stats);
                    n
                });
            let took_us = started.elapsed().as_micros() as u64;
            report_slow(slow.note(Some(took_us), Instant::now()));
            match result {
                Ok(n) => {
                    for j in &jobs {
                        for l in &j.writes {
                            stats.leases_by_state[lease_state_index(l.state)] += 1;
                        }
                        sink.job_written(&j.writes, j.then.as_ref());
                    }
                    sink.written(
                        &mut jobs
                            .iter()
                            .filter(|j| j.announce)
                            .flat_map(|j| j.writes.iter()),
                    );
                    released.extend(jobs.drain(..).filter_map(|j| j.then));
                    if let Some(f) = failing.take() {
                        tracing::warn!(
                            tries = f.tries + 1,
                            failed_for_ms = f.since.elapsed().as_millis() as u64,
                            replies = released.len(),
                            "store: the group commit went through after failing; the replies it held go out now"
                        );
                    }
                    committed();
                    stats.commits += 1;
                    stats.leases += n as u64;
                    stats.batch_leases.record(n as u64);
                    stats.commit_us.record(took_us);
                    stats.jobs += released.len() as u64;
                    sink.durable(&mut released);
                }
                Err(e) => {
                    stats.failures += 1;
                    let f = failing.get_or_insert(Failing {
                        since: started,
                        tries: 0,
                        wait: retry.wait_first,
                    });
                    f.tries += 1;
                    // The failures reach the metrics now, not after the batch went through.
                    tick(&stats);
                    if f.since.elapsed() >= retry.give_up_after {
                        tracing::error!(
                            error = %e,
                            tries = f.tries,
                            failed_for_ms = f.since.elapsed().as_millis() as u64,
                            "store: group commits keep failing; giving up: the server stops, as the leases in memory may be ahead of the disk (a failover partner sees the link drop)"
                        );
                        // What the workers queued behind the batch is withheld too: the
                        // log's count is every reply that will not go out.
                        while let Ok(j) = rx.try_recv() {
                            jobs.push(j);
                        }
                        released.extend(jobs.drain(..).filter_map(|j| j.then));
                        sink.failed(&mut released, &e);
                        released.clear();
                        stats.gave_up = true;
                        break;
                    }
                    if f.tries == 1 {
                        tracing::error!(
                            error = %e,
                            jobs = jobs.len(),
                            "store: group commit failed; the same changes are tried again, first (their replies wait), for up to {} s",
                            retry.give_up_after.as_secs()
                        );
                    }
                    // The batch stays in `jobs`: the next try commits it, with what came
                    // since (the channel is bounded, so the batch is too).
                    std::thread::sleep(f.wait);
                    f.wait = (f.wait * 2).min(retry.wait_max);
                    continue;
                }
            }
            released.clear();
            if folder.plan.is_none() && store.fold_due() {
                folder.start(store, &mut stats);
            }
        }
        if last_tick.elapsed() >= tick_every {
            last_tick = std::time::Instant::now();
            report_slow(slow.note(None, last_tick));
            tick(&stats);
        }
    }
    // Slow commits of the last interval, which no later commit or tick reported.
    report_slow(slow.take_pending());
    // The next start folds what is left too; folding now makes that start quicker.
    if !stats.gave_up && (folder.plan.is_some() || store.journal_pending()) {
        folder.fold_all(store, &mut stats);
    }
    stats
}

/// How the group committer treats a commit that fails (a disk error, a full map).
///
/// It does not drop the batch: the lease table in memory already holds its changes, and
/// leaving them out of the store would let memory run ahead of the disk (a resource freed in
/// memory while the store still gives it to a client whose reply never left). It tries the
/// same changes again, first, with the replies held, waiting longer each time. A fault that
/// passes (a disk that was full, a transient I/O error) costs only the wait. One that does not
/// stops the server after [`CommitRetry::give_up_after`]: a failover partner then sees the
/// link drop (COMMUNICATIONS-INTERRUPTED, then PARTNER-DOWN by its operator or its
/// `auto_partner_down_secs`), and the next start reads what is durable. A full map does not
/// clear by trying again (each try carries the batch and what came since), so it stops the
/// server too: refusing new leases past 90 % of the map (`server.map_size_mib`) is what
/// keeps it from filling.
#[derive(Debug, Clone, Copy)]
pub struct CommitRetry {
    /// Wait before the first new try; it doubles with each try, up to `wait_max`.
    pub wait_first: Duration,
    /// Longest wait between two tries.
    pub wait_max: Duration,
    /// How long commits may go on failing before the committer gives up.
    pub give_up_after: Duration,
}

impl Default for CommitRetry {
    /// 50 ms doubling to 1 s, for 10 s: a client retransmits its Request after 1 s, then
    /// after about 2, 4, 8 s and so on, ten times (RFC 8415 REQ_TIMEOUT, REQ_MAX_RC), so a
    /// fault that passes within seconds loses none of them.
    fn default() -> Self {
        CommitRetry {
            wait_first: Duration::from_millis(50),
            wait_max: Duration::from_secs(1),
            give_up_after: Duration::from_secs(10),
        }
    }
}

/// A run of failed commits of one batch ([`CommitRetry`]).
struct Failing {
    /// When the first of them started.
    since: Instant,
    /// Tries so far.
    tries: u32,
    /// Wait before the next try.
    wait: Duration,
}

/// Logs a [`SlowCommits`] report (slow commits, longest in µs), if there is one.
fn report_slow(report: Option<(u64, u64)>) {
    if let Some((commits, worst_us)) = report {
        tracing::warn!(
            commits,
            longest_ms = worst_us / 1000,
            "store: group commits took {} ms or more (the disk's fsync, most likely): the replies they carried waited as long",
            SLOW_COMMIT_WARN.as_millis()
        );
    }
}

/// A group commit that takes at least this long (its fsync included; a failed one too) is
/// reported at warn: the replies of its batch waited that long, and a client retransmits after
/// 1 s (RFC 8415 REQ_TIMEOUT). On a healthy disk a commit takes a few milliseconds.
pub const SLOW_COMMIT_WARN: Duration = Duration::from_millis(200);
/// Slow commits are reported at most once per this interval; the report counts those since the
/// last one and gives the longest.
pub const SLOW_COMMIT_REPORT_EVERY: Duration = Duration::from_secs(10);

/// Slow group commits not reported yet ([`SLOW_COMMIT_WARN`]).
#[derive(Debug, Default)]
struct SlowCommits {
    /// Slow commits since the last report, and the longest of them in microseconds.
    pending: u64,
    worst_us: u64,
    last_report: Option<Instant>,
}

impl SlowCommits {
    /// Notes a commit of `took_us` ending at `now` (`None`: no commit, only time passing);
    /// returns (slow commits, longest in µs) when a report is due.
    fn note(&mut self, took_us: Option<u64>, now: Instant) -> Option<(u64, u64)> {
        if let Some(us) = took_us
            && us >= SLOW_COMMIT_WARN.as_micros() as u64
        {
            self.pending += 1;
            self.worst_us = self.worst_us.max(us);
        }
        let due = self
            .last_report
            .is_none_or(|t| now.saturating_duration_since(t) >= SLOW_COMMIT_REPORT_EVERY);
        if self.pending == 0 || !due {
            return None;
        }
        self.last_report = Some(now);
        self.take_pending()
    }

    /// The slow commits not reported yet, if any (they count as reported now).
    fn take_pending(&mut self) -> Option<(u64, u64)> {
        if self.pending == 0 {
            return None;
        }
        let report = (self.pending, self.worst_us);
        self.pending = 0;
        self.worst_us = 0;
        Some(report)
    }
}

/// Jobs a paced commit must expect to take, on average at the recent rate, for the group
/// committer to wait for them: below that rate the wait would add latency and save little.
pub const PACE_JOBS_MIN: f64 = 4.0;
/// Shortest span over which the group committer measures the rate of changes.
pub const PACE_WINDOW: Duration = Duration::from_millis(100);

/// When the group committer starts its next commit. Under load a commit starts at most every
/// `min_interval`, and what arrives meanwhile joins it: the fsync's cost is per commit, so
/// fewer, larger commits cost less per change. A quiet server is not paced: while fewer than
/// [`PACE_JOBS_MIN`] jobs come per `min_interval`, a job commits at once.
struct Pace {
    min_interval: Duration,
    /// When the last commit started (`None`: none yet).
    last: Option<Instant>,
    /// Start of the current rate window, and the jobs committed since.
    window_start: Instant,
    window_jobs: u64,
    /// Whether the rate of the last full window called for pacing.
    busy: bool,
}

impl Pace {
    fn new(min_interval: Duration) -> Pace {
        Pace {
            min_interval,
            last: None,
            window_start: Instant::now(),
            window_jobs: 0,
            busy: false,
        }
    }

    /// The earliest the next commit may start, if it must wait.
    fn due(&self) -> Option<Instant> {
        self.last
            .filter(|_| self.busy)
            .map(|t| t + self.min_interval)
    }

    /// Notes a commit of `jobs` jobs starting `at`.
    fn started(&mut self, at: Instant, jobs: usize) {
        self.last = Some(at);
        self.window_jobs += jobs as u64;
        let span = at.saturating_duration_since(self.window_start);
        if span >= PACE_WINDOW {
            let per_interval =
                self.window_jobs as f64 * self.min_interval.as_secs_f64() / span.as_secs_f64();
            self.busy = per_interval >= PACE_JOBS_MIN;
            self.window_start = at;
            self.window_jobs = 0;
        }
    }
}

/// When the group committer folds, and the fold under way.
struct Folder {
    /// No fold before this: after a failure the next waits a tick (a fold that failed would
    /// fail again at once).
    after: Instant,
    tick_every: Duration,
    /// The fold under way, a slice of which rides in each commit.
    plan: Option<FoldPlan>,
}

impl Folder {
    /// Starts a fold of the journal that is due ([`Store::fold_start`]).
    fn start(&mut self, store: &Store, stats: &mut CommitStats) {
        if Instant::now() < self.after {
            return;
        }
        let started = Instant::now();
        match store.fold_start() {
            Ok(plan) => {
                self.plan = plan.map(|mut p| {
                    // Copying and sorting the entries holds the next commit too.
                    p.spent += started.elapsed();
                    p
                })
            }
            Err(e) => self.failed(e, stats),
        }
    }

    /// Counts what a commit did to the fold under way.
    fn progress(&mut self, progress: FoldProgress, stats: &mut CommitStats) {
        match progress {
            FoldProgress::None | FoldProgress::Slice => {}
            FoldProgress::Done => {
                if let Some(plan) = self.plan.take() {
                    stats.folds += 1;
                    stats.fold_us.record(plan.spent.as_micros() as u64);
                }
            }
            FoldProgress::Failed(e) => {
                self.plan = None;
                self.failed(e, stats);
            }
        }
    }

    /// Folds both journals whole (when idle, and at exit), giving up any fold under way (its
    /// slices applied so far are applied again: the same result), and counts it in `stats`.
    fn fold_all(&mut self, store: &Store, stats: &mut CommitStats) {
        if Instant::now() < self.after {
            return;
        }
        self.plan = None;
        let started = Instant::now();
        match store.fold_journal() {
            Ok(_) => {
                stats.folds += 1;
                stats.fold_us.record(started.elapsed().as_micros() as u64);
            }
            Err(e) => self.failed(e, stats),
        }
    }

    fn failed(&mut self, e: StoreError, stats: &mut CommitStats) {
        stats.fold_failures += 1;
        self.after = Instant::now() + self.tick_every;
        tracing::error!(error = %e, "store: cannot fold the journal into the lease database; commits go on into the journal, and the fold is tried again (raise server.map_size_mib if the map is full)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_core::config::ResourceKind;
    use tandem_core::failover::persist;
    use tandem_core::failover::state::{Persisted, ServerState};
    use tandem_core::lease::LeaseState;

    fn lease(seq: u64, state: LeaseState) -> Lease {
        Lease {
            kind: ResourceKind::Address,
            addr: "2001:db8::5".parse().unwrap(),
            prefix_len: 128,
            subnet_id: 1,
            state,
            duid: vec![1, 2, 3].into(),
            iaid: 1,
            preferred_secs: 1,
            valid_secs: 2,
            cltt: 3,
            expires_at: 4,
            seq,
            partner_ack_until: 0,
            partner_lifetime_received: 0,
            relay: Default::default(),
            partner_seq: 0,
        }
    }

    #[test]
    fn newer_change_wins_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), 16, true).unwrap();
            assert!(matches!(
                Store::open(dir.path(), 16, true),
                Err(StoreError::Locked(_))
            ));
            let d1 = s.server_duid_or_create(|| vec![0, 4, 9]).unwrap();
            assert_eq!(s.server_duid_or_create(|| vec![7]).unwrap(), d1);
            let l = lease(5, LeaseState::Released);
            s.commit([&l]).unwrap();
            s.commit([&lease(4, LeaseState::Active)]).unwrap();
            assert_eq!(
                s.get(l.kind, l.addr).unwrap(),
                Some(lease(5, LeaseState::Released)),
                "older change skipped"
            );
            s.fold_journal().unwrap();
            s.commit([&lease(4, LeaseState::Active)]).unwrap();
            s.fold_journal().unwrap();
            assert_eq!(s.get(l.kind, l.addr).unwrap(), Some(l), "also when folded");
            // Within one batch too; this one is left in the journal for the reopen to fold.
            s.commit([
                &lease(7, LeaseState::Active),
                &lease(6, LeaseState::Expired),
            ])
            .unwrap();
            assert!(s.journal_pending());
        }
        let s = Store::open(dir.path(), 16, true).unwrap();
        assert!(!s.journal_pending(), "folded at open");
        assert_eq!(s.server_duid_or_create(|| vec![8]).unwrap(), vec![0, 4, 9]);
        let mut all = Vec::new();
        let st = s
            .load_leases(|l| all.push(l), |_, _| panic!("corrupt"))
            .unwrap();
        assert_eq!(st.loaded, 1);
        assert_eq!(all[0], lease(7, LeaseState::Active));
    }

    /// A record that cannot be read is replaced by the next write of its lease, whatever its
    /// sequence: the new record is then the one a restart loads.
    #[test]
    fn unreadable_record_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 16, true).unwrap();
        let l = lease(3, LeaseState::Active);
        let mut w = s.env.write_txn().unwrap();
        s.leases.put(&mut w, &l.key(), &[0xff, 1, 2]).unwrap();
        w.commit().unwrap();
        assert_eq!(s.commit([&l]).unwrap(), 1);
        for folded in [false, true] {
            if folded {
                s.fold_journal().unwrap();
            }
            let mut all = Vec::new();
            s.load_leases(|l| all.push(l), |_, e| panic!("corrupt: {e:?}"))
                .unwrap();
            assert_eq!(all, vec![l.clone()], "folded: {folded}");
        }
    }

    /// Stores of layout 1 (lease values of version 1), 2 (version 2), 3 (no journal) and 4
    /// (one journal) are opened, marked layout 5 and their leases read; a layout this build
    /// does not know is refused.
    #[test]
    fn older_layouts_are_upgraded_and_an_unknown_layout_refused() {
        for (layout, value_version, cut) in [(1u32, 1u8, 2 + 8), (2, 2, 8), (3, 3, 0), (4, 3, 0)] {
            let dir = tempfile::tempdir().unwrap();
            {
                let s = Store::open(dir.path(), 16, true).unwrap();
                s.put_meta(META_LAYOUT_VERSION, &layout.to_le_bytes())
                    .unwrap();
                // Version 2: the same without the partner version's sequence; version 1 also
                // without the relay length.
                let l = lease(7, LeaseState::Active);
                let mut v = Vec::new();
                l.encode_value(&mut v);
                v[0] = value_version;
                v.truncate(v.len() - cut);
                let mut w = s.env.write_txn().unwrap();
                s.leases.put(&mut w, &l.key(), &v).unwrap();
                w.commit().unwrap();
            }
            let s = Store::open(dir.path(), 16, true).unwrap();
            assert_eq!(
                s.get_meta(META_LAYOUT_VERSION).unwrap(),
                Some(LAYOUT_VERSION.to_le_bytes().to_vec())
            );
            let mut all = Vec::new();
            s.load_leases(|l| all.push(l), |_, e| panic!("corrupt: {e}"))
                .unwrap();
            assert_eq!(all, vec![lease(7, LeaseState::Active)], "layout {layout}");
            s.put_meta(META_LAYOUT_VERSION, &6u32.to_le_bytes())
                .unwrap();
            drop(s);
            assert!(matches!(
                Store::open(dir.path(), 16, true),
                Err(StoreError::Layout { found: 6 })
            ));
        }
    }

    #[test]
    fn meta_put_get_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = Store::open(dir.path(), 16, true).unwrap();
            assert_eq!(s.get_meta(b"k").unwrap(), None);
            s.put_meta(b"k", b"one").unwrap();
            s.put_meta(b"k", b"two").unwrap();
            s.put_meta(b"empty", b"").unwrap();
            assert_eq!(s.get_meta(b"k").unwrap().as_deref(), Some(&b"two"[..]));
        }
        let s = Store::open(dir.path(), 16, true).unwrap();
        assert_eq!(s.get_meta(b"k").unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(s.get_meta(b"empty").unwrap().as_deref(), Some(&b""[..]));
        // The layout version lives in the same database and is untouched.
        assert_eq!(
            s.get_meta(META_LAYOUT_VERSION).unwrap(),
            Some(LAYOUT_VERSION.to_le_bytes().to_vec())
        );
        drop(s);
        let r = Store::open_reader(dir.path()).unwrap();
        assert_eq!(r.get_meta(b"k").unwrap().as_deref(), Some(&b"two"[..]));
    }

    #[test]
    fn unwritable_data_dir_is_a_clear_error() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let e = Store::open(&f.path().join("sub"), 16, true).err().unwrap();
        assert!(e.to_string().contains("data dir"), "{e}");
    }

    struct Sink(Vec<u32>);
    impl AfterCommit<u32> for Sink {
        fn durable(&mut self, r: &mut Vec<u32>) {
            self.0.extend(r.iter());
        }
        fn failed(&mut self, _: &mut Vec<u32>, e: &StoreError) {
            panic!("{e}")
        }
    }

    #[test]
    fn group_commit_releases_only_after_commit() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 16, true).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(16);
        for i in 0..10u32 {
            let mut l = lease(i as u64 + 1, LeaseState::Active);
            l.addr =
                std::net::Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0100u128 + i as u128);
            tx.send(CommitJob {
                writes: vec![l],
                then: Some(i),
                announce: true,
            })
            .unwrap();
        }
        drop(tx);
        let mut sink = Sink(Vec::new());
        let (st, _) = commit_all(&s, rx, &mut sink, CommitRetry::default());
        assert_eq!(sink.0, (0..10).collect::<Vec<_>>());
        assert_eq!(st.leases, 10);
        assert!(st.commits <= 2, "one or two batches, got {}", st.commits);
        let mut n = 0;
        s.load_leases(|_| n += 1, |_, _| {}).unwrap();
        assert_eq!(n, 10);
    }

    /// Records what a group commit released and what it dropped.
    #[derive(Default)]
    struct Outcomes {
        durable: Vec<u32>,
        failed: Vec<u32>,
    }
    impl AfterCommit<u32> for Outcomes {
        fn durable(&mut self, r: &mut Vec<u32>) {
            self.durable.extend(r.iter());
        }
        fn failed(&mut self, r: &mut Vec<u32>, _: &StoreError) {
            self.failed.extend(r.iter());
        }
    }

    /// Runs the group committer over `rx` (no pacing, ticks of 10 ms) until it ends; also
    /// returns the most failures a tick (what the metrics publish) saw.
    fn commit_all<S: AfterCommit<u32>>(
        s: &Store,
        rx: Receiver<CommitJob<u32>>,
        sink: S,
        retry: CommitRetry,
    ) -> (CommitStats, u64) {
        let mut ticked_failures = 0;
        let st = run_group_commit(
            s,
            rx,
            sink,
            Duration::ZERO,
            Duration::from_millis(10),
            retry,
            || {},
            |st| ticked_failures = ticked_failures.max(st.failures),
        );
        (st, ticked_failures)
    }

    fn job_at(i: u32) -> CommitJob<u32> {
        let mut l = lease(i as u64 + 1, LeaseState::Active);
        l.addr =
            std::net::Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0100u128 + i as u128);
        CommitJob {
            writes: vec![l],
            then: Some(i),
            announce: true,
        }
    }

    /// A commit that fails is not dropped: the same jobs are committed again, first, and
    /// their replies leave once they are stored, in order, none lost.
    #[test]
    fn a_failed_commit_is_tried_again_and_its_replies_leave_after() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 16, true).unwrap();
        s.fail_commits.store(3, Ordering::Relaxed);
        let (tx, rx) = crossbeam_channel::bounded(16);
        for i in 0..10u32 {
            tx.send(job_at(i)).unwrap();
        }
        drop(tx);
        let mut out = Outcomes::default();
        let retry = CommitRetry {
            wait_first: Duration::from_millis(1),
            wait_max: Duration::from_millis(4),
            give_up_after: Duration::from_secs(60),
        };
        let (st, ticked_failures) = commit_all(&s, rx, &mut out, retry);
        assert_eq!(out.durable, (0..10).collect::<Vec<_>>());
        assert_eq!(ticked_failures, 3, "each failed try reaches the metrics");
        assert!(out.failed.is_empty(), "dropped {:?}", out.failed);
        assert_eq!(st.failures, 3);
        assert!(!st.gave_up);
        assert_eq!(st.leases, 10);
        let mut n = 0;
        s.load_leases(|_| n += 1, |_, _| {}).unwrap();
        assert_eq!(n, 10);
    }

    /// A store whose commits keep failing: after `give_up_after` the committer drops the
    /// replies it held, and those queued behind its batch, and returns, saying so, while the
    /// senders are still there (the server then stops).
    #[test]
    fn a_store_that_keeps_failing_stops_the_committer() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 16, true).unwrap();
        s.fail_commits.store(u64::MAX, Ordering::Relaxed);
        let queued = COMMIT_BATCH_MAX as u32 + 3;
        let (tx, rx) = crossbeam_channel::bounded(queued as usize);
        for i in 0..queued {
            tx.send(job_at(i)).unwrap();
        }
        let mut out = Outcomes::default();
        let retry = CommitRetry {
            wait_first: Duration::from_millis(5),
            wait_max: Duration::from_millis(20),
            give_up_after: Duration::from_millis(200),
        };
        let started = Instant::now();
        let (st, ticked_failures) = commit_all(&s, rx, &mut out, retry);
        assert!(st.gave_up);
        assert_eq!(
            ticked_failures, st.failures,
            "the metrics saw every failed try"
        );
        assert!(started.elapsed() >= retry.give_up_after);
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(out.durable.is_empty());
        assert_eq!(
            out.failed,
            (0..queued).collect::<Vec<_>>(),
            "the batch's replies, then those still queued"
        );
        assert!(st.failures >= 2, "tried again: {}", st.failures);
        assert_eq!(st.commits, 0);
        drop(tx);
        let mut n = 0;
        s.load_leases(|_| n += 1, |_, _| {}).unwrap();
        assert_eq!(n, 0);
    }

    /// Group commits are paced under load only: while changes come slower than
    /// [`PACE_JOBS_MIN`] per `min_interval`, each commits at once; under a steady load faster
    /// than that, a commit starts at most every `min_interval` and takes everything that
    /// arrived meanwhile; after a quiet spell a change commits at once again.
    #[test]
    fn group_commits_are_paced_under_load_only() {
        /// Sends each released job with the number of the commit that released it.
        struct Timed(crossbeam_channel::Sender<(u32, u32)>, u32);
        impl AfterCommit<u32> for Timed {
            fn durable(&mut self, r: &mut Vec<u32>) {
                self.1 += 1;
                for &i in r.iter() {
                    self.0.send((i, self.1)).unwrap();
                }
            }
            fn failed(&mut self, _: &mut Vec<u32>, e: &StoreError) {
                panic!("{e}")
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 16, true).unwrap();
        // Pacing starts at PACE_JOBS_MIN (4) changes a second.
        let interval = Duration::from_secs(1);
        let (tx, rx) = crossbeam_channel::bounded(64);
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let job = |i: u32| {
            let mut l = lease(1, LeaseState::Active);
            l.addr =
                std::net::Ipv6Addr::from(0x2001_0db8_0000_0000_0000_0000_0000_0100u128 + i as u128);
            CommitJob {
                writes: vec![l],
                then: Some(i),
                announce: false,
            }
        };
        let released = |want: u32| {
            let (i, commit) = done_rx.recv_timeout(Duration::from_secs(30)).unwrap();
            assert_eq!(i, want);
            commit
        };
        std::thread::scope(|sc| {
            let committer = sc.spawn(|| {
                let tick = Duration::from_millis(50);
                run_group_commit(
                    &s,
                    rx,
                    Timed(done_tx, 0),
                    interval,
                    tick,
                    CommitRetry::default(),
                    || {},
                    |_| {},
                )
            });
            // A lone change is not kept waiting for the pace.
            let at_once = |i: u32| {
                let sent = Instant::now();
                tx.send(job(i)).unwrap();
                released(i);
                let waited = sent.elapsed();
                assert!(waited < interval / 2, "change {i} waited {waited:?}");
            };
            // Quiet: under 4 changes a second.
            at_once(0);
            std::thread::sleep(Duration::from_millis(600));
            at_once(1);
            std::thread::sleep(Duration::from_millis(600));
            // A steady 20 changes a second for 2 s: unpaced, each would commit alone.
            for i in 2..42 {
                tx.send(job(i)).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
            let commits: std::collections::BTreeSet<u32> = (2..42).map(released).collect();
            assert!(
                commits.len() <= 10,
                "40 changes in {} commits, not paced",
                commits.len()
            );
            // Quiet again.
            std::thread::sleep(interval + interval / 4);
            at_once(42);
            drop(tx);
            let st = committer.join().unwrap();
            assert_eq!(st.leases, 43);
        });
    }

    /// Slow commits on a made-up clock: fast ones are never reported; the first slow one is at
    /// once; those within the next [`SLOW_COMMIT_REPORT_EVERY`] are counted and reported
    /// together (by a later commit or by time passing), with the longest.
    #[test]
    fn slow_commits_are_reported_at_once_then_at_most_once_an_interval() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let slow_us = SLOW_COMMIT_WARN.as_micros() as u64;
        let every_ms = SLOW_COMMIT_REPORT_EVERY.as_millis() as u64;
        let mut s = SlowCommits::default();
        assert_eq!(s.note(Some(slow_us - 1), at(0)), None, "fast");
        assert_eq!(s.note(None, at(1)), None, "nothing pending");
        assert_eq!(
            s.note(Some(slow_us), at(2)),
            Some((1, slow_us)),
            "first: at once"
        );
        assert_eq!(
            s.note(Some(900_000), at(3)),
            None,
            "within the interval: counted"
        );
        assert_eq!(s.note(Some(300_000), at(4)), None);
        assert_eq!(
            s.note(Some(1_000), at(5)),
            None,
            "fast ones are not counted"
        );
        assert_eq!(s.note(None, at(2 + every_ms - 1)), None, "not yet");
        assert_eq!(
            s.note(None, at(2 + every_ms)),
            Some((2, 900_000)),
            "the interval passed: the two since, and the longest"
        );
        assert_eq!(s.note(None, at(3 * every_ms)), None, "reported once");
        assert_eq!(
            s.note(Some(slow_us), at(3 * every_ms + 1)),
            Some((1, slow_us)),
            "a quiet interval later: at once again"
        );
        // At the end (the committer stops), what waits is reported whatever the interval.
        assert_eq!(s.note(Some(slow_us + 5), at(3 * every_ms + 2)), None);
        assert_eq!(s.take_pending(), Some((1, slow_us + 5)));
        assert_eq!(s.take_pending(), None);
    }

    /// The pace's gate, on a made-up clock: quiet (under [`PACE_JOBS_MIN`] changes per
    /// interval) no wait; under load the next commit is due an interval after the last began;
    /// quiet again, no wait.
    #[test]
    fn pace_waits_only_while_changes_come_faster_than_it_takes_them() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut p = Pace::new(Duration::from_millis(100));
        p.window_start = t0;
        assert_eq!(p.due(), None, "nothing committed yet");
        // 3 changes in 100 ms: under 4 per interval.
        p.started(ms(0), 1);
        p.started(ms(60), 1);
        p.started(ms(100), 1);
        assert_eq!(p.due(), None);
        // 5 in the next 100 ms: paced from the commit that measured it.
        p.started(ms(150), 4);
        assert_eq!(p.due(), None, "the window is still open");
        p.started(ms(200), 1);
        assert_eq!(p.due(), Some(ms(300)));
        // A commit of the next interval's changes: the rate holds.
        p.started(ms(300), 5);
        assert_eq!(p.due(), Some(ms(400)));
        // One change after a quiet second.
        p.started(ms(1300), 1);
        assert_eq!(p.due(), None);
    }

    fn persisted(state: ServerState) -> Persisted {
        Persisted {
            state,
            state_since: 1000,
            last_operated: 2000,
            partner_down_since: 0,
            communicated: true,
            store_was_empty: false,
        }
    }

    #[test]
    fn failover_state_survives_store_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = persisted(ServerState::PartnerDown);
        {
            let s = Store::open(dir.path(), 16, true).unwrap();
            assert_eq!(s.get_meta(persist::META_FAILOVER_STATE).unwrap(), None);
            s.put_meta(
                persist::META_FAILOVER_STATE,
                &persist::encode(&persisted(ServerState::Normal)),
            )
            .unwrap();
            s.put_meta(persist::META_FAILOVER_STATE, &persist::encode(&p))
                .unwrap();
        }
        let s = Store::open(dir.path(), 16, true).unwrap();
        let b = s.get_meta(persist::META_FAILOVER_STATE).unwrap().unwrap();
        assert_eq!(persist::decode(&b), Some(p));
    }

    /// The key of resource `i` of a small test space, of either kind.
    fn resource(i: u8) -> (ResourceKind, std::net::Ipv6Addr) {
        let kind = if i.is_multiple_of(2) {
            ResourceKind::Address
        } else {
            ResourceKind::Prefix
        };
        (
            kind,
            std::net::Ipv6Addr::from(0x2001_0db8_u128 << 96 | i as u128),
        )
    }

    fn lease_of(i: u8, seq: u64) -> Lease {
        let (kind, addr) = resource(i);
        Lease {
            kind,
            addr,
            prefix_len: if kind == ResourceKind::Address {
                128
            } else {
                56
            },
            ..lease(seq, LeaseState::Active)
        }
    }

    /// The leases of `model` (resource → seq) in key order.
    fn sorted(model: &BTreeMap<u8, u64>) -> Vec<Lease> {
        let mut v: Vec<Lease> = model.iter().map(|(&i, &q)| lease_of(i, q)).collect();
        v.sort_by_key(|l| l.key());
        v
    }

    /// One step of [`journal_keeps_the_rule_of_a_direct_store`].
    #[derive(Debug, Clone)]
    enum Step {
        /// Commit writes of (resource, seq) in one transaction.
        Commit(Vec<(u8, u64)>),
        /// Forget (resource, seq) in one transaction.
        Forget(Vec<(u8, u64)>),
        Fold,
        /// Start a fold under load (a no-op while one is under way).
        FoldStart,
        /// Commit writes with a slice of at most this many entries of the fold under way.
        CommitFolding(Vec<(u8, u64)>, usize),
        Reopen,
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        let changes = || proptest::collection::vec((0u8..6, 1u64..12), 1..5);
        prop_oneof![
            4 => changes().prop_map(Step::Commit),
            2 => changes().prop_map(Step::Forget),
            1 => Just(Step::Fold),
            2 => Just(Step::FoldStart),
            4 => (changes(), 1usize..4).prop_map(|(c, n)| Step::CommitFolding(c, n)),
            1 => Just(Step::Reopen),
        ]
    }

    proptest::proptest! {
        /// The fold's sort key orders lease keys exactly as their bytes do (LMDB's order),
        /// including keys that share a long prefix.
        #[test]
        fn sort_key_orders_as_the_bytes(
            a in proptest::array::uniform17(0u8..4),
            b in proptest::array::uniform17(proptest::prelude::any::<u8>()),
            shared in 0usize..18,
        ) {
            let mut b = b;
            b[..shared].copy_from_slice(&a[..shared]);
            proptest::prop_assert_eq!(sort_key(&a).cmp(&sort_key(&b)), a.cmp(&b));
            proptest::prop_assert_eq!(sort_key(&a).cmp(&sort_key(&a)), std::cmp::Ordering::Equal);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        /// Whatever the order of commits, forgets, folds (whole, or in slices riding in
        /// commits, given up half done by a fold of all or a restart) and restarts, the store
        /// holds what a store that applied every change to its record at once would hold (the
        /// newest write wins; a forget deletes a version no newer than the one forgotten), and
        /// `load_leases`, `get` and a reader opened before each restart (on the journals the
        /// writer left) all see it.
        #[test]
        fn journal_keeps_the_rule_of_a_direct_store(
            steps in proptest::collection::vec(step(), 1..24)
        ) {
            let dir = tempfile::tempdir().unwrap();
            let mut s = Some(Store::open(dir.path(), 16, false).unwrap());
            let mut model: BTreeMap<u8, u64> = BTreeMap::new();
            let mut plan: Option<FoldPlan> = None;
            for st in steps {
                let store = s.as_ref().unwrap();
                match st {
                    Step::FoldStart => {
                        if plan.is_none() {
                            plan = store.fold_start().unwrap();
                        }
                    }
                    Step::CommitFolding(ws, slice) => {
                        let ls: Vec<Lease> = ws.iter().map(|&(i, q)| lease_of(i, q)).collect();
                        let (n, progress) = store.commit_folding(ls.iter(), plan.as_mut(), slice).unwrap();
                        proptest::prop_assert_eq!(n, ls.len());
                        match progress {
                            FoldProgress::Done => plan = None,
                            FoldProgress::Failed(e) => panic!("fold slice failed: {e}"),
                            FoldProgress::None | FoldProgress::Slice => {}
                        }
                        for (i, q) in ws {
                            if model.get(&i).is_none_or(|&m| m <= q) {
                                model.insert(i, q);
                            }
                        }
                    }
                    Step::Commit(ws) => {
                        let ls: Vec<Lease> = ws.iter().map(|&(i, q)| lease_of(i, q)).collect();
                        store.commit(ls.iter()).unwrap();
                        for (i, q) in ws {
                            if model.get(&i).is_none_or(|&m| m <= q) {
                                model.insert(i, q);
                            }
                        }
                    }
                    Step::Forget(fs) => {
                        let ls: Vec<Lease> = fs.iter().map(|&(i, q)| lease_of(i, q)).collect();
                        store.forget(ls.iter()).unwrap();
                        for (i, q) in fs {
                            if model.get(&i).is_some_and(|&m| m <= q) {
                                model.remove(&i);
                            }
                        }
                    }
                    Step::Fold => {
                        plan = None;
                        store.fold_journal().unwrap();
                    }
                    Step::Reopen => {
                        plan = None;
                        // A reader first (heed opens one environment per path and process),
                        // while the journal is as the writer left it.
                        drop(s.take());
                        let r = Store::open_reader(dir.path()).unwrap();
                        let mut seen = Vec::new();
                        r.load_leases(|l| seen.push(l), |_, e| panic!("corrupt: {e}")).unwrap();
                        proptest::prop_assert_eq!(&seen, &sorted(&model));
                        drop(r);
                        s = Some(Store::open(dir.path(), 16, false).unwrap());
                    }
                }
                let store = s.as_ref().unwrap();
                let mut got = Vec::new();
                store.load_leases(|l| got.push(l), |_, e| panic!("corrupt: {e}")).unwrap();
                proptest::prop_assert_eq!(&got, &sorted(&model));
                for i in 0..6 {
                    let (kind, addr) = resource(i);
                    let want = model.get(&i).map(|&q| lease_of(i, q));
                    proptest::prop_assert_eq!(store.get(kind, addr).unwrap(), want);
                }
            }
        }
    }

    /// The group committer folds the journal once it holds [`JOURNAL_FOLD_AT`] entries, and
    /// what is left when it goes idle; the leases are then in the lease database itself.
    #[test]
    fn group_commit_folds_the_journal_when_due_and_when_idle() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 64, false).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(64);
        // Enough for a due fold; after a pause (an idle fold), 10 more for another.
        let n = JOURNAL_FOLD_AT as u128 + 110;
        let sender = std::thread::spawn(move || {
            for i in 0..n {
                if i == n - 10 {
                    std::thread::sleep(Duration::from_millis(100));
                }
                let mut l = lease(1, LeaseState::Active);
                l.addr = std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) + i);
                tx.send(CommitJob {
                    writes: vec![l],
                    then: Some(i as u32),
                    announce: true,
                })
                .unwrap();
            }
            // Idle for longer than a tick, then gone.
            std::thread::sleep(Duration::from_millis(100));
        });
        let mut sink = Sink(Vec::new());
        let st = run_group_commit(
            &s,
            rx,
            &mut sink,
            Duration::ZERO,
            Duration::from_millis(20),
            CommitRetry::default(),
            || {},
            |_| {},
        );
        sender.join().unwrap();
        assert_eq!(sink.0.len() as u128, n);
        assert!(st.folds >= 2, "one when due, one when idle: {}", st.folds);
        assert_eq!(st.fold_failures, 0);
        assert!(!s.journal_pending());
        let rtxn = s.env.read_txn().unwrap();
        assert_eq!(s.leases.len(&rtxn).unwrap() as u128, n);
    }

    /// A fold under load: the full journal stops being active, its entries go into `leases`
    /// a slice per commit while commits go on into the other journal, and the last slice
    /// empties it; a key's entries are never split between slices.
    #[test]
    fn a_fold_rides_in_commits_a_slice_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 16, false).unwrap();
        let lens = |s: &Store| {
            let rtxn = s.env.read_txn().unwrap();
            let n = |i: usize| s.journals[i].unwrap().len(&rtxn).unwrap();
            (n(0), n(1), s.leases.len(&rtxn).unwrap())
        };
        // Ten entries over five resources, resource 0 written four times.
        for (i, q) in [
            (0, 1),
            (1, 1),
            (0, 2),
            (2, 1),
            (0, 3),
            (3, 1),
            (0, 4),
            (4, 1),
        ] {
            s.commit([&lease_of(i, q)]).unwrap();
        }
        s.commit([&lease_of(1, 2), &lease_of(2, 2)]).unwrap();
        assert_eq!(lens(&s), (10, 0, 0));
        let mut plan = s.fold_start().unwrap().expect("something to fold");
        assert_eq!(plan.len(), 10);
        assert_eq!(
            s.active.load(Ordering::Relaxed),
            1,
            "commits go on into journal2"
        );
        let mut slices = Vec::new();
        for q in 10.. {
            let (n, progress) = s
                .commit_folding([&lease_of(5, q)], Some(&mut plan), 3)
                .unwrap();
            assert_eq!(n, 1);
            slices.push(plan.done);
            // Readers see every change throughout.
            assert_eq!(
                s.get(resource(0).0, resource(0).1).unwrap(),
                Some(lease_of(0, 4))
            );
            assert_eq!(
                s.get(resource(5).0, resource(5).1).unwrap(),
                Some(lease_of(5, q))
            );
            match progress {
                FoldProgress::Slice => continue,
                FoldProgress::Done => break,
                p => panic!("{p:?}"),
            }
        }
        // Key order (addresses before prefixes): resource 0's four entries first, in one
        // slice over the bound of 3; then 2 (two) and 4; then 1 (two) and 3.
        assert_eq!(slices, vec![4, 7, 10]);
        let (j0, j1, leases) = lens(&s);
        assert_eq!((j0, j1, leases), (0, 3, 5), "folded journal emptied");
        // The next fold swaps back.
        let plan = s.fold_start().unwrap().expect("journal2 to fold");
        assert_eq!((plan.len(), s.active.load(Ordering::Relaxed)), (3, 0));
        let mut all = Vec::new();
        s.load_leases(|l| all.push(l), |_, e| panic!("corrupt: {e}"))
            .unwrap();
        let mut want: Vec<Lease> = [(0, 4), (1, 2), (2, 2), (3, 1), (4, 1), (5, 12)]
            .iter()
            .map(|&(i, q)| lease_of(i, q))
            .collect();
        want.sort_by_key(|l| l.key());
        assert_eq!(all, want);
    }

    /// After a start whose fold failed, commits go into the journal with the newest entry,
    /// after it: the journals' keys must not interleave.
    #[test]
    fn commits_continue_after_the_newest_entry_left() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 16, false).unwrap();
        // As a run that crashed mid-fold and a start that could not fold leave them: older
        // entries in `journal`, newer ones in `journal2`.
        s.commit([&lease_of(1, 1)]).unwrap();
        let plan = s.fold_start().unwrap().expect("journal to fold");
        s.commit([&lease_of(2, 1)]).unwrap();
        drop(plan);
        s.active.store(0, Ordering::Relaxed);
        s.continue_after_newest().unwrap();
        assert_eq!(s.active.load(Ordering::Relaxed), 1);
        s.commit([&lease_of(3, 1)]).unwrap();
        let rtxn = s.env.read_txn().unwrap();
        let keys = |i: usize| -> Vec<u64> {
            s.journals[i]
                .unwrap()
                .iter(&rtxn)
                .unwrap()
                .map(|e| u64::from_be_bytes(e.unwrap().0.try_into().unwrap()))
                .collect()
        };
        assert_eq!((keys(0), keys(1)), (vec![0], vec![1, 2]));
    }

    /// A journal entry that cannot be read is skipped by readers and by the fold; the rest
    /// of the journal is applied.
    #[test]
    fn unreadable_journal_entry_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 16, true).unwrap();
        let journal = s.journals[0].unwrap();
        let mut w = s.env.write_txn().unwrap();
        journal
            .put(&mut w, &0u64.to_be_bytes(), &[9, 9, 9])
            .unwrap();
        w.commit().unwrap();
        let l = lease_of(2, 4);
        s.commit([&l]).unwrap();
        let mut all = Vec::new();
        s.load_leases(|l| all.push(l), |_, e| panic!("corrupt: {e}"))
            .unwrap();
        assert_eq!(all, vec![l.clone()]);
        assert_eq!(s.fold_journal().unwrap(), 2);
        assert_eq!(s.get(l.kind, l.addr).unwrap(), Some(l));
    }

    /// With the map nearly full, folding renewals scattered over the whole lease database in
    /// one transaction does not fit (it copies every leaf page it changes before it frees
    /// any); `fold_journal` then folds in smaller transactions, and every change lands.
    #[test]
    fn fold_fits_a_nearly_full_map_in_smaller_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), 16, false).unwrap();
        let map_pages = (16u64 << 20) / 4096;
        let addr = |i: u128| std::net::Ipv6Addr::from((0x2001_0db8_u128 << 96) + i);
        let mut n = 0u128;
        // Fill the lease database to over half the map, 4,096 records at a time.
        let leaf_pages = |s: &Store| {
            let rtxn = s.env.read_txn().unwrap();
            s.leases.stat(&rtxn).unwrap().leaf_pages as u64
        };
        for _ in 0..64 {
            if leaf_pages(&s) * 100 >= map_pages * 55 {
                break;
            }
            let batch: Vec<Lease> = (n..n + 4096)
                .map(|i| Lease {
                    addr: addr(i),
                    ..lease(1, LeaseState::Active)
                })
                .collect();
            s.commit(batch.iter()).unwrap();
            s.fold_journal().unwrap();
            n += 4096;
        }
        let leaves = leaf_pages(&s);
        assert!(leaves * 100 >= map_pages * 55, "filled {leaves} leaf pages");
        // Renew one lease per leaf page, so a fold changes every leaf.
        let step = (n / leaves as u128).max(1);
        let renewed: Vec<Lease> = (0..n)
            .step_by(step as usize)
            .map(|i| Lease {
                addr: addr(i),
                ..lease(2, LeaseState::Active)
            })
            .collect();
        s.commit(renewed.iter()).unwrap();
        assert!(
            matches!(
                s.fold_journal_some(0, usize::MAX),
                Err(StoreError::Lmdb(heed::Error::Mdb(heed::MdbError::MapFull)))
            ),
            "one transaction fits; fill more"
        );
        assert_eq!(s.fold_journal().unwrap(), renewed.len() as u64);
        assert!(!s.journal_pending());
        let (mut old, mut new) = (0, 0);
        s.load_leases(
            |l| match l.seq {
                1 => old += 1,
                _ => new += 1,
            },
            |_, e| panic!("corrupt: {e}"),
        )
        .unwrap();
        assert_eq!(new, renewed.len());
        assert_eq!(old + new, n as usize);
    }
}
