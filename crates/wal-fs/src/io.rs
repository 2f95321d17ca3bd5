//! The file layer: every write, sync, resize, rename and delete that
//! [`FsStore`](crate::FsStore) does to the log goes through [`FileIo`], so
//! tests can inject faults ("what if this fsync fails?") by wrapping the real
//! implementation. So does the one call that decides where reads come from
//! ([`FileIo::drop_page_cache`]), so a disk model can show a store the bytes
//! the disk holds. Reads and opens go straight to `std::fs`: they change
//! nothing, so there is no fault worth injecting there that the damage tests
//! do not already cover.

use std::{fmt, fs::File, io, os::unix::fs::FileExt, path::Path};

/// The mutating file operations of the store. Every method has the real
/// behaviour as its default, so a fault injector overrides only what it
/// intercepts and calls [`StdFileIo`] (or the default) for the rest.
///
/// ```
/// use std::{fs::File, io, sync::atomic::{AtomicBool, Ordering}};
/// use wal_fs::FileIo;
///
/// /// Fails every fdatasync once armed.
/// #[derive(Debug, Default)]
/// struct FailingSync(AtomicBool);
///
/// impl FileIo for FailingSync {
///     fn sync_data(&self, file: &File) -> io::Result<()> {
///         if self.0.load(Ordering::SeqCst) {
///             return Err(io::Error::other("injected fsync failure"));
///         }
///         file.sync_data()
///     }
/// }
/// ```
pub trait FileIo: Send + Sync + fmt::Debug + 'static {
    /// Writes all of `buf` at byte `offset` (one `pwrite`, repeated on a
    /// short count). A failure may leave any prefix of `buf` written.
    fn write_all_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }

    /// `fdatasync`: makes the file's data, and the metadata needed to read
    /// it back (its size), durable.
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    /// Truncates or extends the file to `len` bytes.
    fn set_len(&self, file: &File, len: u64) -> io::Result<()> {
        file.set_len(len)
    }

    /// Allocates disk space for the first `len` bytes of the file and makes
    /// it at least that long (`fallocate` with mode 0), so later writes
    /// inside it change no metadata the next `fdatasync` must persist. Falls
    /// back to [`set_len`](Self::set_len) (a sparse file) where the file
    /// system cannot allocate.
    fn allocate(&self, file: &File, len: u64) -> io::Result<()> {
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {
                if file.metadata()?.len() < len {
                    self.set_len(file, len)
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Makes the directory's entries (creations, renames, deletions)
    /// durable: `fsync` on the directory.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    /// Renames `from` to `to`, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    /// Deletes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    /// Drops the file's clean pages from the page cache, so that later reads
    /// come from the disk: `posix_fadvise(POSIX_FADV_DONTNEED)` over the
    /// whole file. It changes no byte of the file.
    ///
    /// Why: after a failed `fdatasync`, Linux may keep the pages whose
    /// writeback failed in the page cache, marked clean. Reading them shows
    /// bytes the disk does not hold ("fsyncgate"). Open calls this, right
    /// after an `fdatasync`, on the segment it is about to scan and append
    /// to, so it never adopts such bytes. Dirty pages are not dropped (the
    /// kernel starts their writeback instead), which is why open syncs
    /// first: after a successful `fdatasync` every cached page is clean.
    /// Pages some process has mapped are not dropped either. On file systems
    /// without a page cache of their own (tmpfs) it does nothing, and there
    /// is no disk to disagree with.
    fn drop_page_cache(&self, file: &File) -> io::Result<()> {
        rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed)?;
        Ok(())
    }
}

/// The real file layer: `std::fs` and `fallocate(2)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFileIo;

impl FileIo for StdFileIo {}
