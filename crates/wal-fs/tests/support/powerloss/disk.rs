//! A [`FileIo`] that models what a disk keeps after a power loss.
//!
//! Every operation is done for real (so the store under test sees a normal
//! file system) and mirrored in a shadow model:
//!
//! - per inode: the bytes (and size) the last `sync_data` made durable, the
//!   current bytes, and which bytes changed since (the pending writes,
//!   resizes and allocations);
//! - per directory: the entries (name -> inode) the last directory fsync made
//!   durable, and the creations, renames and unlinks since, in order.
//!
//! Creations happen through `std::fs` (opening a file is not a `FileIo`
//! call), so before every call the directory is listed and new names are
//! recorded as pending creations.
//!
//! Operation `crash_at` and every later one fail with EIO and do nothing.
//! [`PowerLossIo::rebuild`] then writes one legal post-power-loss state of
//! the directory under a [`CrashModel`].
//!
//! Model (e), fsyncgate, is not a power loss: an `fdatasync` failed and the
//! machine stayed up. [`PowerLossIo::fork_after_failed_sync`] builds a real
//! directory as the page cache shows it (the failed file's lost bytes
//! still there, cached and clean) and a model of it whose disk holds only
//! what really reached it; a store reopened on it sees the disk's bytes
//! only where it calls [`FileIo::drop_page_cache`]. A second power loss
//! ([`PowerLossIo::rebuild`] of the fork) then shows what a store that
//! trusted the cache has done.
//!
//! The disk assumptions (stated in the README, and exactly what the model
//! allows): `fdatasync` makes a file's bytes and size durable; a directory
//! fsync makes its entries durable; unsynced data reaches the disk in
//! 512-byte sectors, each whole, in any order; powersafe overwrite: a write
//! never changes durable bytes outside the range it writes, even inside a
//! sector it tears; a rename is atomic.

use std::{
    collections::BTreeMap,
    fs::File,
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Mutex,
};

use wal_fs::{FileIo, StdFileIo};

/// The sector size of the model: unsynced data lands in whole sectors.
pub const SECTOR: usize = 512;

/// Which post-power-loss state to rebuild.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CrashModel {
    /// (a) Every unsynced write and directory change is lost.
    LoseUnsynced,
    /// (b) Everything is kept: the process died, the kernel did not.
    KeepAll,
    /// (c) Each 512-byte sector of unsynced data is old or new, each file's
    /// size old or new, at random; directory changes kept.
    TornSectors(u64),
    /// (d) Each unsynced directory change kept or lost at random (and the
    /// data torn as in (c)).
    DirRandom(u64),
    /// (e) fsyncgate: an `fdatasync` failed and the machine stayed up. The
    /// page cache still shows the failed file's unsynced bytes, cached and
    /// clean, so they are never written; the disk holds, of them, nothing
    /// (`None`) or each 512-byte sector old or new at random (`Some(seed)`),
    /// the size old or new. Only for a crash at `sync_data`; see
    /// [`PowerLossIo::fork_after_failed_sync`]. As a [`PowerLossIo::rebuild`]
    /// model it is the page cache's view, (b).
    FsyncGate(Option<u64>),
}

impl CrashModel {
    /// The model's name without its seed.
    pub fn name(&self) -> &'static str {
        match self {
            CrashModel::LoseUnsynced => "a:lose-unsynced",
            CrashModel::KeepAll => "b:keep-all",
            CrashModel::TornSectors(_) => "c:torn-sectors",
            CrashModel::DirRandom(_) => "d:dir-random",
            CrashModel::FsyncGate(_) => "e:fsyncgate",
        }
    }
}

/// A small seeded generator (splitmix64): the explorer needs reproducible
/// coin flips, not statistical quality.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

#[derive(Clone, Debug, Default)]
struct Inode {
    /// The real inode number while the file has a name in the real directory.
    ino: Option<u64>,
    durable: Vec<u8>,
    current: Vec<u8>,
    /// `dirty[i]`: byte `i` changed since the last `sync_data` (a write,
    /// or a resize that cut or extended the file over it). A byte where
    /// `current` and `durable` differ but that is not dirty is *stale*: the
    /// page cache shows it, the disk does not hold it, and no sync will
    /// write it (model (e) only).
    dirty: Vec<bool>,
}

impl Inode {
    fn mark(&mut self, from: usize, to: usize) {
        if self.dirty.len() < to {
            self.dirty.resize(to, false);
        }
        for d in &mut self.dirty[from..to] {
            *d = true;
        }
    }

    fn resize(&mut self, len: usize) {
        let old = self.current.len();
        self.current.resize(len, 0);
        self.mark(old.min(len), old.max(len));
    }

    /// `fdatasync`: the dirty bytes and the size become durable. A stale
    /// byte stays as the disk has it (zero past the old durable size: the
    /// size grew, its blocks were never written).
    fn sync(&mut self) {
        self.durable.resize(self.current.len(), 0);
        for (i, d) in self.dirty.iter().enumerate() {
            if *d && i < self.current.len() {
                self.durable[i] = self.current[i];
            }
        }
        self.dirty.clear();
    }

    /// `POSIX_FADV_DONTNEED`: clean cached pages are dropped, so every byte
    /// that is not dirty reads as the disk holds it. The size is the
    /// kernel's in-memory one and does not change.
    fn drop_cache(&mut self) {
        for i in 0..self.current.len() {
            if !self.dirty.get(i).copied().unwrap_or(false) {
                self.current[i] = self.durable.get(i).copied().unwrap_or(0);
            }
        }
    }

    fn materialize(&self, model: CrashModel, rng: &mut Rng) -> Vec<u8> {
        match model {
            CrashModel::LoseUnsynced => self.durable.clone(),
            CrashModel::KeepAll | CrashModel::FsyncGate(_) => self.current.clone(),
            CrashModel::TornSectors(_) | CrashModel::DirRandom(_) => {
                let size = if self.durable.len() != self.current.len() && rng.coin() {
                    self.current.len()
                } else if self.durable.len() != self.current.len() {
                    self.durable.len()
                } else {
                    self.current.len()
                };
                let mut out = self.durable.clone();
                out.resize(out.len().max(self.current.len()).max(self.dirty.len()), 0);
                for start in (0..self.dirty.len()).step_by(SECTOR) {
                    let end = (start + SECTOR).min(self.dirty.len());
                    if !self.dirty[start..end].iter().any(|d| *d) {
                        continue;
                    }
                    if rng.coin() {
                        // This sector landed: the bytes the pending writes
                        // changed take their new value, the rest stay.
                        for (i, byte) in out.iter_mut().enumerate().take(end).skip(start) {
                            if self.dirty[i] {
                                *byte = self.current.get(i).copied().unwrap_or(0);
                            }
                        }
                    }
                }
                out.truncate(size);
                out
            }
        }
    }
}

#[derive(Clone, Debug)]
enum DirOp {
    Create(String, usize),
    Rename(String, String),
    Unlink(String),
}

#[derive(Clone, Debug, Default)]
struct Disk {
    ops: u64,
    crash_at: Option<u64>,
    crashed: bool,
    log: Vec<String>,
    inodes: Vec<Inode>,
    current: BTreeMap<String, usize>,
    durable: BTreeMap<String, usize>,
    pending: Vec<DirOp>,
    /// Writes that bypassed `FileIo` (found at `sync_data`).
    bypasses: Vec<String>,
    /// The inode whose `sync_data` was the crash point.
    failed_sync: Option<usize>,
}

/// The modelled disk. See the module docs.
#[derive(Debug)]
pub struct PowerLossIo {
    dir: PathBuf,
    /// Self-test: `sync_data` succeeds but makes nothing durable.
    broken_sync: bool,
    disk: Mutex<Disk>,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("power loss (modelled) before {what}: EIO"))
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

impl PowerLossIo {
    /// A model of `dir` (which must be empty) crashing at operation
    /// `crash_at` (0-based; `None`: never).
    pub fn new(dir: &Path, crash_at: Option<u64>, broken_sync: bool) -> PowerLossIo {
        PowerLossIo {
            dir: dir.to_path_buf(),
            broken_sync,
            disk: Mutex::new(Disk {
                crash_at,
                ..Disk::default()
            }),
        }
    }

    /// Operations seen (including the one that crashed).
    pub fn ops(&self) -> u64 {
        self.disk.lock().unwrap().ops
    }

    /// Whether the crash point was reached.
    pub fn crashed(&self) -> bool {
        self.disk.lock().unwrap().crashed
    }

    /// Whether the operation that crashed was an `fdatasync`.
    pub fn crashed_at_sync_data(&self) -> bool {
        self.disk.lock().unwrap().failed_sync.is_some()
    }

    /// Model (e): the directory as a machine that stayed up shows it after
    /// the failed `fdatasync` this run crashed at, written to the empty
    /// directory `dir`, and a model of it (no crash point) for a store to
    /// reopen it through. Every file has its current bytes (what the page
    /// cache shows); the failed file's unsynced bytes are stale (cached,
    /// clean, never to be written) and its disk holds what `truth` says
    /// ([`CrashModel::FsyncGate`]); other files' unsynced bytes are still
    /// dirty. Directory entries keep their durable and pending state.
    pub fn fork_after_failed_sync(&self, dir: &Path, truth: Option<u64>) -> PowerLossIo {
        let d = self.disk.lock().unwrap();
        let failed = d.failed_sync.expect("the run did not crash at sync_data");
        let mut fork = d.clone();
        for inode in &mut fork.inodes {
            inode.ino = None;
        }
        for (name, id) in &d.current {
            let path = dir.join(name);
            std::fs::write(&path, &d.inodes[*id].current).unwrap();
            fork.inodes[*id].ino = Some(std::fs::metadata(&path).unwrap().ino());
        }
        let inode = &mut fork.inodes[failed];
        let mut rng = Rng::new(truth.unwrap_or(0));
        inode.durable = match truth {
            None => inode.durable.clone(),
            Some(seed) => inode.materialize(CrashModel::TornSectors(seed), &mut rng),
        };
        inode.dirty.clear();
        fork.crash_at = None;
        fork.crashed = false;
        fork.failed_sync = None;
        fork.bypasses.clear();
        fork.log.push(format!(
            "---- the machine stays up; {} reopened after the failed fdatasync (disk holds {}) ----",
            Self::file_name_of(&d, failed),
            match truth {
                None => "none of its unsynced bytes".to_string(),
                Some(seed) => format!("its unsynced sectors torn, seed {seed}"),
            }
        ));
        PowerLossIo {
            dir: dir.to_path_buf(),
            broken_sync: self.broken_sync,
            disk: Mutex::new(fork),
        }
    }

    /// The numbers of the operations that were an `fdatasync`: the crash
    /// points of model (e).
    pub fn sync_data_ops(&self) -> Vec<u64> {
        let d = self.disk.lock().unwrap();
        d.log
            .iter()
            .filter_map(|l| {
                let (n, what) = l.strip_prefix('#')?.split_once(' ')?;
                what.starts_with("sync_data ").then(|| n.parse().ok())?
            })
            .collect()
    }

    /// One line per operation, in order.
    pub fn log(&self) -> Vec<String> {
        self.disk.lock().unwrap().log.clone()
    }

    /// Mutations that did not go through `FileIo`.
    pub fn bypasses(&self) -> Vec<String> {
        self.disk.lock().unwrap().bypasses.clone()
    }

    /// Stops the model: every later operation fails. Called after the
    /// workload, so a run that never reached `crash_at` is frozen too.
    pub fn power_off(&self) {
        let mut d = self.disk.lock().unwrap();
        self.scan(&mut d);
        d.crashed = true;
    }

    /// The directory after a power loss under `model`: name -> contents.
    pub fn rebuild(&self, model: CrashModel, seed: u64) -> BTreeMap<String, Vec<u8>> {
        let d = self.disk.lock().unwrap();
        let mut rng = Rng::new(seed);
        let mut names = d.durable.clone();
        for op in &d.pending {
            let keep = match model {
                CrashModel::LoseUnsynced => false,
                CrashModel::KeepAll | CrashModel::FsyncGate(_) | CrashModel::TornSectors(_) => true,
                CrashModel::DirRandom(_) => rng.coin(),
            };
            if !keep {
                continue;
            }
            match op {
                DirOp::Create(n, id) => {
                    names.insert(n.clone(), *id);
                }
                DirOp::Rename(from, to) => {
                    if let Some(id) = names.remove(from) {
                        names.insert(to.clone(), id);
                    }
                }
                DirOp::Unlink(n) => {
                    names.remove(n);
                }
            }
        }
        names
            .into_iter()
            .map(|(n, id)| (n, d.inodes[id].materialize(model, &mut rng)))
            .collect()
    }

    /// Mirrors the real directory's names into `current`.
    fn scan(&self, d: &mut Disk) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut seen = BTreeMap::new();
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if !md.is_file() {
                continue;
            }
            seen.insert(e.file_name().to_string_lossy().into_owned(), md.ino());
        }
        let gone: Vec<String> = d
            .current
            .iter()
            .filter(|(n, id)| seen.get(*n) != d.inodes[**id].ino.as_ref())
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            d.log
                .push(format!("    (outside FileIo) {n} unlinked or replaced"));
            let id = d.current.remove(&n).unwrap();
            d.pending.push(DirOp::Unlink(n));
            if !d.current.values().any(|v| *v == id) {
                d.inodes[id].ino = None;
            }
        }
        for (n, ino) in seen {
            if d.current.contains_key(&n) {
                continue;
            }
            let id = match d.inodes.iter().position(|i| i.ino == Some(ino)) {
                Some(id) => id,
                None => {
                    let content = std::fs::read(self.dir.join(&n)).unwrap_or_default();
                    let mut inode = Inode {
                        ino: Some(ino),
                        ..Inode::default()
                    };
                    inode.current = content;
                    let len = inode.current.len();
                    inode.mark(0, len);
                    d.inodes.push(inode);
                    d.inodes.len() - 1
                }
            };
            d.log.push(format!("    (open) create {n}"));
            d.current.insert(n.clone(), id);
            d.pending.push(DirOp::Create(n, id));
        }
    }

    /// Counts the operation; fails it if the power is off.
    fn begin(&self, d: &mut Disk, what: String) -> io::Result<()> {
        if d.crashed {
            return Err(eio(&what));
        }
        self.scan(d);
        let n = d.ops;
        d.ops += 1;
        if d.crash_at.is_some_and(|k| n >= k) {
            d.crashed = true;
            d.log.push(format!("#{n} CRASH at {what}"));
            return Err(eio(&what));
        }
        d.log.push(format!("#{n} {what}"));
        Ok(())
    }

    fn inode_of(&self, d: &mut Disk, file: &File) -> io::Result<usize> {
        let ino = file.metadata()?.ino();
        if let Some(id) = d.inodes.iter().position(|i| i.ino == Some(ino)) {
            return Ok(id);
        }
        // Open but no longer named (unlinked): its bytes can never be read
        // back after a crash; track it anyway.
        d.inodes.push(Inode::default());
        Ok(d.inodes.len() - 1)
    }

    fn file_name_of(d: &Disk, id: usize) -> String {
        d.current
            .iter()
            .find(|(_, v)| **v == id)
            .map(|(n, _)| n.clone())
            .unwrap_or_else(|| format!("<unlinked inode {id}>"))
    }
}

impl FileIo for PowerLossIo {
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        self.scan(&mut d);
        let id = self.inode_of(&mut d, file)?;
        let name = Self::file_name_of(&d, id);
        self.begin(&mut d, format!("write {name} @{offset} +{}", buf.len()))?;
        StdFileIo.write_all_at(file, buf, offset)?;
        let inode = &mut d.inodes[id];
        let (from, to) = (offset as usize, offset as usize + buf.len());
        if inode.current.len() < to {
            inode.resize(to);
        }
        inode.current[from..to].copy_from_slice(buf);
        inode.mark(from, to);
        Ok(())
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        self.scan(&mut d);
        let id = self.inode_of(&mut d, file)?;
        let name = Self::file_name_of(&d, id);
        let what = if self.broken_sync {
            format!("sync_data {name} (broken: makes nothing durable)")
        } else {
            format!("sync_data {name}")
        };
        let was_off = d.crashed;
        if let Err(e) = self.begin(&mut d, what) {
            if !was_off {
                // This fdatasync is the crash point.
                d.failed_sync = Some(id);
            }
            return Err(e);
        }
        let len = file.metadata()?.len();
        let inode = &mut d.inodes[id];
        if len != inode.current.len() as u64 {
            let msg = format!(
                "{name}: real size {len}, model {}: a resize bypassed FileIo",
                inode.current.len()
            );
            d.bypasses.push(msg);
        } else if let Ok(real) = std::fs::read(self.dir.join(&name)) {
            if real != inode.current {
                d.bypasses
                    .push(format!("{name}: bytes written outside FileIo"));
            }
        }
        if !self.broken_sync {
            d.inodes[id].sync();
        }
        Ok(())
    }

    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        self.scan(&mut d);
        let id = self.inode_of(&mut d, file)?;
        let name = Self::file_name_of(&d, id);
        self.begin(&mut d, format!("set_len {name} {len}"))?;
        StdFileIo.set_len(file, len)?;
        d.inodes[id].resize(len as usize);
        Ok(())
    }

    fn allocate(&self, file: &File, len: u64) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        self.scan(&mut d);
        let id = self.inode_of(&mut d, file)?;
        let name = Self::file_name_of(&d, id);
        self.begin(&mut d, format!("allocate {name} {len}"))?;
        StdFileIo.allocate(file, len)?;
        if (d.inodes[id].current.len() as u64) < len {
            d.inodes[id].resize(len as usize);
        }
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        self.begin(&mut d, format!("sync_dir {}", dir.display()))?;
        if dir == self.dir {
            d.durable = d.current.clone();
            d.pending.clear();
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        let (f, t) = (name_of(from), name_of(to));
        self.begin(&mut d, format!("rename {f} -> {t}"))?;
        StdFileIo.rename(from, to)?;
        if let Some(id) = d.current.remove(&f) {
            if let Some(old) = d.current.insert(t.clone(), id) {
                if !d.current.values().any(|v| *v == old) {
                    d.inodes[old].ino = None;
                }
            }
        }
        d.pending.push(DirOp::Rename(f, t));
        Ok(())
    }

    /// Every byte that is not dirty now reads as the disk holds it: the
    /// real file is rewritten so (same inode), and the model with it.
    fn drop_page_cache(&self, file: &File) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        self.scan(&mut d);
        let id = self.inode_of(&mut d, file)?;
        let name = Self::file_name_of(&d, id);
        self.begin(&mut d, format!("drop_page_cache {name}"))?;
        let inode = &mut d.inodes[id];
        let before = inode.current.clone();
        inode.drop_cache();
        if inode.current != before {
            let changed = before
                .iter()
                .zip(&inode.current)
                .filter(|(a, b)| a != b)
                .count();
            std::fs::write(self.dir.join(&name), &inode.current)?;
            d.log.push(format!(
                "    ({changed} stale bytes of {name} dropped: reads now show the disk)"
            ));
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut d = self.disk.lock().unwrap();
        let n = name_of(path);
        self.begin(&mut d, format!("unlink {n}"))?;
        StdFileIo.remove_file(path)?;
        if let Some(id) = d.current.remove(&n) {
            if !d.current.values().any(|v| *v == id) {
                d.inodes[id].ino = None;
            }
        }
        d.pending.push(DirOp::Unlink(n));
        Ok(())
    }
}
