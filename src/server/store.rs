//! Durable store: LMDB through `heed`, and the group committer that makes a Reply leave only
//! after the leases it grants are on disk. Key layout: `docs/storage.md`.

use crate::histogram::{Count, Histogram, LatencyUs};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use heed::types::Bytes;
use heed::{CommitOrAbort, Database, Env, EnvFlags, EnvOpenOptions};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tandem_core::lease::{self, Lease, LeaseStore};

/// Most commit jobs folded into one LMDB transaction (one fsync).
pub const COMMIT_BATCH_MAX: usize = 4096;
/// Meta key of the server DUID.
pub const META_SERVER_DUID: &[u8] = b"server_duid";
/// Meta key of the store layout version.
pub const META_LAYOUT_VERSION: &[u8] = b"layout_version";
/// Layout version this code writes and reads. 2: lease values may be of version 2 (relay
/// data after the DUID), which a build of layout 1 cannot read. 3: lease values of version 3
/// (the partner version's sequence after the relay data), which a build of layout 2 cannot
/// read. An older store is taken and marked 3 at the first open, so an older build then
/// refuses it at start instead of skipping every lease written since as corrupt.
pub const LAYOUT_VERSION: u32 = 3;
/// Older layout versions this code opens (and upgrades in place).
pub const LAYOUT_VERSIONS_UPGRADED: &[u32] = &[1, 2];

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
    /// The store was written by an incompatible version.
    #[error("store layout version {found} is not supported (this build reads {LAYOUT_VERSION})")]
    Layout {
        /// Version found on disk.
        found: u32,
    },
}

/// The LMDB environment with its two databases.
pub struct Store {
    env: Env,
    meta: Database<'static, Bytes, Bytes>,
    leases: Database<'static, Bytes, Bytes>,
    _lock: Option<File>,
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
        let (meta, leases) = env
            .create_databases_and_commit(wtxn, |dbo, wtxn| -> Result<_, StoreError> {
                let meta: Database<Bytes, Bytes> = dbo.create_database(wtxn, Some("meta"))?;
                let leases: Database<Bytes, Bytes> = dbo.create_database(wtxn, Some("leases"))?;
                Ok(CommitOrAbort::<_, ()>::Commit((meta, leases)))
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
        Ok(Store {
            env,
            meta,
            leases,
            _lock: Some(lock),
        })
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
        let (meta, leases) = env
            .open_databases_and_commit(rtxn, |dbo, rtxn| -> Result<_, StoreError> {
                let meta: Option<Database<Bytes, Bytes>> = dbo.open_database(rtxn, Some("meta"))?;
                let leases: Option<Database<Bytes, Bytes>> =
                    dbo.open_database(rtxn, Some("leases"))?;
                Ok(CommitOrAbort::<_, ()>::Commit((meta, leases)))
            })?
            .unwrap_commit();
        match (meta, leases) {
            (Some(meta), Some(leases)) => Ok(Store {
                env,
                meta,
                leases,
                _lock: None,
            }),
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

    /// How much of the map the data uses: (bytes in the pages of the lease and meta databases,
    /// map size in bytes). Freed pages (LMDB's free list) are not counted: they are reused.
    pub fn map_use(&self) -> (u64, u64) {
        let info = self.env.info();
        let page = self.env.unnamed_database_stat().page_size as u64;
        let pages = self.env.read_txn().ok().map_or(0, |rtxn| {
            [&self.leases, &self.meta]
                .iter()
                .filter_map(|db| db.stat(&rtxn).ok())
                .map(|st| (st.branch_pages + st.leaf_pages + st.overflow_pages) as u64)
                .sum::<u64>()
        });
        // The two meta pages and the main database's page.
        ((pages + 3) * page, info.map_size as u64)
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

    /// Calls `f` for every stored lease; corrupt records are counted and reported to `bad`.
    pub fn load_leases(
        &self,
        mut f: impl FnMut(Lease),
        mut bad: impl FnMut(&[u8], lease::DecodeError),
    ) -> Result<LoadStats, StoreError> {
        let rtxn = self.env.read_txn()?;
        let mut st = LoadStats::default();
        for item in self.leases.iter(&rtxn)? {
            let (k, v) = item?;
            match Lease::decode(k, v) {
                Ok(l) => {
                    st.loaded += 1;
                    f(l)
                }
                Err(e) => {
                    st.corrupt += 1;
                    bad(k, e)
                }
            }
        }
        Ok(st)
    }

    /// Writes every lease in one transaction and commits it (fsync unless opened without sync).
    /// A write whose sequence is older than the stored one is skipped: the newer change wins
    /// whatever order workers handed them in.
    pub fn commit<'a>(
        &self,
        writes: impl IntoIterator<Item = &'a Lease>,
    ) -> Result<usize, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        let mut buf = Vec::with_capacity(256);
        let mut n = 0;
        for l in writes {
            let k = l.key();
            buf.clear();
            l.encode_value(&mut buf);
            // One B-tree search for a new record: it is written unless the key is there, in
            // which case the stored version comes back and decides.
            let stored_seq = match self.leases.get_or_put(&mut wtxn, &k, &buf)? {
                None => {
                    n += 1;
                    continue;
                }
                Some(stored) => lease::value_seq(stored),
            };
            if !lease::supersedes(stored_seq, l) {
                continue;
            }
            self.leases.put(&mut wtxn, &k, &buf)?;
            n += 1;
        }
        wtxn.commit()?;
        Ok(n)
    }

    /// Deletes the records of forgotten leases (`server.keep_ended_secs`) in one transaction,
    /// each only if the stored version is no newer than the one forgotten: a change made since
    /// stays.
    pub fn forget<'a>(
        &self,
        forgotten: impl IntoIterator<Item = &'a Lease>,
    ) -> Result<usize, StoreError> {
        let mut wtxn = self.env.write_txn()?;
        let mut n = 0;
        for l in forgotten {
            let k = l.key();
            let stored_seq = self.leases.get(&wtxn, &k)?.and_then(lease::value_seq);
            if stored_seq.is_some_and(|s| s <= l.seq) && self.leases.delete(&mut wtxn, &k)? {
                n += 1;
            }
        }
        wtxn.commit()?;
        Ok(n)
    }

    /// Reads one lease (tests, operator tools).
    pub fn get(
        &self,
        kind: tandem_core::config::ResourceKind,
        addr: std::net::Ipv6Addr,
    ) -> Result<Option<Lease>, StoreError> {
        let rtxn = self.env.read_txn()?;
        let k = lease::key(kind, addr);
        Ok(self
            .leases
            .get(&rtxn, &k)?
            .and_then(|v| Lease::decode(&k, v).ok()))
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
    /// Leases written.
    pub leases: u64,
    /// Jobs (typically replies) released.
    pub jobs: u64,
    /// Commits that failed.
    pub failures: u64,
    /// Leases written per commit.
    pub batch_leases: Histogram<Count>,
    /// Time of each commit, its fsync included, in microseconds.
    pub commit_us: Histogram<LatencyUs>,
    /// Leases written, by the state they were written in ([`LeaseState`] order).
    pub leases_by_state: [u64; LEASE_STATES],
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

/// Runs the group committer until every sender of `rx` is gone: takes the first waiting job,
/// then everything else already queued (up to [`COMMIT_BATCH_MAX`]), commits all in one
/// transaction, and hands their `then` values to `sink`. `committed` runs after every
/// successful commit (before the replies are released); `tick` runs about every `tick_every`
/// with the current stats, for periodic logging.
pub fn run_group_commit<R, S: AfterCommit<R>>(
    store: &Store,
    rx: Receiver<CommitJob<R>>,
    mut sink: S,
    tick_every: Duration,
    mut committed: impl FnMut(),
    mut tick: impl FnMut(&CommitStats),
) -> CommitStats {
    let mut stats = CommitStats::default();
    let mut jobs: Vec<CommitJob<R>> = Vec::with_capacity(COMMIT_BATCH_MAX);
    let mut released: Vec<R> = Vec::with_capacity(COMMIT_BATCH_MAX);
    let mut last_tick = std::time::Instant::now();
    loop {
        match rx.recv_timeout(tick_every) {
            Ok(j) => jobs.push(j),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        while jobs.len() < COMMIT_BATCH_MAX {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        if !jobs.is_empty() {
            let started = Instant::now();
            let result = store.commit(jobs.iter().flat_map(|j| j.writes.iter()));
            let took_us = started.elapsed().as_micros() as u64;
            if result.is_ok() {
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
            }
            released.extend(jobs.drain(..).filter_map(|j| j.then));
            match result {
                Ok(n) => {
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
                    sink.failed(&mut released, &e);
                }
            }
            released.clear();
        }
        if last_tick.elapsed() >= tick_every {
            last_tick = std::time::Instant::now();
            tick(&stats);
        }
    }
    stats
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
            relay: Box::default(),
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
            s.commit([&lease(5, LeaseState::Released)]).unwrap();
            assert_eq!(
                s.commit([&lease(4, LeaseState::Active)]).unwrap(),
                0,
                "older change skipped"
            );
            // Within one batch too.
            assert_eq!(
                s.commit([
                    &lease(7, LeaseState::Active),
                    &lease(6, LeaseState::Expired),
                ])
                .unwrap(),
                1
            );
        }
        let s = Store::open(dir.path(), 16, true).unwrap();
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
        let mut all = Vec::new();
        s.load_leases(|l| all.push(l), |_, e| panic!("corrupt: {e:?}"))
            .unwrap();
        assert_eq!(all, vec![l]);
    }

    /// Stores of layout 1 (lease values of version 1) and 2 (version 2) are opened, marked
    /// layout 3 and their leases read; a layout this build does not know is refused.
    #[test]
    fn older_layouts_are_upgraded_and_an_unknown_layout_refused() {
        for (layout, value_version, cut) in [(1u32, 1u8, 2 + 8), (2, 2, 8)] {
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
            s.put_meta(META_LAYOUT_VERSION, &4u32.to_le_bytes())
                .unwrap();
            drop(s);
            assert!(matches!(
                Store::open(dir.path(), 16, true),
                Err(StoreError::Layout { found: 4 })
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
        let st = run_group_commit(&s, rx, &mut sink, Duration::from_millis(10), || {}, |_| {});
        assert_eq!(sink.0, (0..10).collect::<Vec<_>>());
        assert_eq!(st.leases, 10);
        assert!(st.commits <= 2, "one or two batches, got {}", st.commits);
        let mut n = 0;
        s.load_leases(|_| n += 1, |_, _| {}).unwrap();
        assert_eq!(n, 10);
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
}
