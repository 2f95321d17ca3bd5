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
    /// page cache still shows the unsynced bytes (the state is (b)'s), but
    /// the kernel may have dropped them from the disk's to-do list: a reopen
    /// must not hand them out as recovered. Only for a crash at `sync_data`.
    FsyncGate,
}

impl CrashModel {
    /// The model's name without its seed.
    pub fn name(&self) -> &'static str {
        match self {
            CrashModel::LoseUnsynced => "a:lose-unsynced",
            CrashModel::KeepAll => "b:keep-all",
            CrashModel::TornSectors(_) => "c:torn-sectors",
            CrashModel::DirRandom(_) => "d:dir-random",
            CrashModel::FsyncGate => "e:fsyncgate",
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

#[derive(Debug, Default)]
struct Inode {
    /// The real inode number while the file has a name in the real directory.
    ino: Option<u64>,
    durable: Vec<u8>,
    current: Vec<u8>,
    /// `dirty[i]`: byte `i` changed since the last `sync_data` (a write,
    /// or a resize that cut or extended the file over it).
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

    fn materialize(&self, model: CrashModel, rng: &mut Rng) -> Vec<u8> {
        match model {
            CrashModel::LoseUnsynced => self.durable.clone(),
            CrashModel::KeepAll | CrashModel::FsyncGate => self.current.clone(),
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

#[derive(Debug, Default)]
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
        let d = self.disk.lock().unwrap();
        d.log
            .iter()
            .rev()
            .find(|l| l.contains(" CRASH at "))
            .is_some_and(|l| l.contains(" CRASH at sync_data "))
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
                CrashModel::KeepAll | CrashModel::FsyncGate | CrashModel::TornSectors(_) => true,
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
        self.begin(&mut d, what)?;
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
            let inode = &mut d.inodes[id];
            inode.durable = inode.current.clone();
            inode.dirty.clear();
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
