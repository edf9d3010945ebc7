//! Keeping a mapped file's bytes fixed while they are in use, whatever other processes do to
//! the file.
//!
//! A map of a file shows the file as it is now: a write in place changes the text under the
//! host's index (answers that disagree, slices that split a character), and a truncation turns
//! reads of the lost pages into `SIGBUS`, which kills the process. So a file is mapped only
//! under a read lease (Linux's `F_SETLEASE`): the kernel then holds back any `open` for writing
//! and any `truncate` of the file, and sends this process `SIGIO`. A watcher thread answers it:
//! it copies the mapped bytes into private memory, puts the copy in place of the map at the same
//! address (`mremap`, atomic for the threads reading it), and only then releases the lease, so
//! the writer goes on and the text the process sees never changes. The copy is paid only when
//! someone writes to the file; the kernel waits for it up to `/proc/sys/fs/lease-break-time`
//! (45 s by default).
//!
//! A lease can be taken only on a file nobody has open for writing, by its owner (or with
//! `CAP_LEASE`), on a local filesystem: elsewhere [`Guarded::map`] declines and the caller
//! reads the file into memory instead. Other systems than Linux always decline.

use std::fs::File;

/// A read-only map of a whole file whose bytes stay as they were when it was made.
pub(crate) struct Guarded {
    map: memmap2::Mmap,
    #[cfg(target_os = "linux")]
    lease: std::sync::Arc<linux::Lease>,
}

impl Guarded {
    /// Map `file` (a regular file of `len` bytes, opened read-only) under a lease; `None` when
    /// a lease cannot be taken (the caller reads the file instead).
    pub(crate) fn map(file: &File) -> std::io::Result<Option<Self>> {
        #[cfg(target_os = "linux")]
        {
            linux::map(file)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = file;
            Ok(None)
        }
    }

    /// The file's bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Whether the bytes are still the file's pages (no one has written to the file since).
    pub(crate) fn is_file_pages(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            !self.lease.is_copied()
        }
        #[cfg(not(target_os = "linux"))]
        {
            true
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // The lease is released first (waiting for a copy in progress), so the watcher never
        // moves a copy to the map's address once the map is gone; memmap2 unmaps it after.
        #[cfg(target_os = "linux")]
        self.lease.retire();
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::fs::File;
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};

    use super::Guarded;

    /// The leases whose maps are live, for the watcher.
    static LEASES: Mutex<Vec<Weak<Lease>>> = Mutex::new(Vec::new());

    /// Started once, before the first lease: a lease's signal with no handler would end the
    /// process.
    static WATCHER: OnceLock<Result<(), String>> = OnceLock::new();

    /// A read lease on a mapped file, and where the map is.
    pub(super) struct Lease {
        /// The file the lease is on; `None` once released.
        file: Mutex<Option<File>>,
        /// The map's address and length.
        addr: usize,
        len: usize,
        copied: AtomicBool,
    }

    impl Lease {
        pub(super) fn is_copied(&self) -> bool {
            self.copied.load(Ordering::Acquire)
        }

        /// Release the lease (the map is gone or going).
        pub(super) fn retire(&self) {
            let file = self
                .file
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            drop(file);
        }

        /// Whether the kernel asks for the lease back (someone opens the file for writing or
        /// truncates it). A lease being broken reads as "no lease".
        fn wanted(&self) -> bool {
            let file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
            file.as_ref().is_some_and(|f| {
                // SAFETY: F_GETLEASE on a descriptor this process owns.
                let held = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETLEASE) };
                held != libc::F_RDLCK
            })
        }

        /// Put a private copy of the bytes in place of the map, then release the lease.
        fn copy_and_release(&self) {
            let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
            if file.is_none() {
                return;
            }
            match replace_with_copy(self.addr, self.len) {
                Ok(()) => self.copied.store(true, Ordering::Release),
                Err(e) => tracing::error!(
                    error = %e,
                    bytes = self.len,
                    "a context file is being changed, and its map could not be copied: \
                     reading it may now fail"
                ),
            }
            // Closing the file releases the lease: the writer goes on.
            drop(file.take());
        }
    }

    /// Copy `len` bytes at `addr` (a map) into fresh private memory, and move that memory over
    /// the map: the same address, the same bytes, no longer the file's.
    fn replace_with_copy(addr: usize, len: usize) -> std::io::Result<()> {
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let span = len.div_ceil(page) * page;
        // SAFETY: a fresh anonymous mapping; on every path below it is either moved over the
        // map or unmapped. The copy reads the map, whose pages are all still there: the writer
        // that asked for the lease waits until it is released.
        unsafe {
            let copy = libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if copy == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error());
            }
            std::ptr::copy_nonoverlapping(addr as *const u8, copy.cast::<u8>(), len);
            let moved = if libc::mprotect(copy, span, libc::PROT_READ) == 0 {
                // Atomic for other threads: a reader sees the map's page or the copy's, which
                // hold the same bytes.
                libc::mremap(
                    copy,
                    span,
                    span,
                    libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                    addr as *mut libc::c_void,
                )
            } else {
                libc::MAP_FAILED
            };
            if moved == libc::MAP_FAILED {
                let e = std::io::Error::last_os_error();
                libc::munmap(copy, span);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Answer `SIGIO`: copy every map whose lease the kernel wants back.
    fn watch() -> Result<(), String> {
        let mut signals = signal_hook::iterator::Signals::new([libc::SIGIO])
            .map_err(|e| format!("cannot watch for SIGIO: {e}"))?;
        std::thread::Builder::new()
            .name("rlm-lease-watch".into())
            .spawn(move || {
                for _ in signals.forever() {
                    let live: Vec<Arc<Lease>> = {
                        let mut leases = LEASES.lock().unwrap_or_else(PoisonError::into_inner);
                        leases.retain(|l| l.strong_count() > 0);
                        leases.iter().filter_map(Weak::upgrade).collect()
                    };
                    for lease in live.iter().filter(|l| l.wanted()) {
                        lease.copy_and_release();
                    }
                }
            })
            .map_err(|e| format!("cannot start the lease watcher: {e}"))?;
        Ok(())
    }

    pub(super) fn map(file: &File) -> std::io::Result<Option<Guarded>> {
        if let Err(e) = WATCHER.get_or_init(watch) {
            tracing::debug!(%e, "context files are read, not mapped");
            return Ok(None);
        }
        // A descriptor of our own on the same open file (the lease belongs to it).
        let file = file.try_clone()?;
        let fd = file.as_raw_fd();
        // SAFETY: F_SETLEASE on a descriptor this process owns, opened read-only.
        if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) } != 0 {
            // Open for writing elsewhere, not ours to lease, or a filesystem without leases.
            tracing::debug!(error = %std::io::Error::last_os_error(), "no lease: the context file is read");
            return Ok(None);
        }
        // Sized under the lease: from here on the file cannot shrink or change.
        let len = file.metadata()?.len();
        if len == 0 {
            return Ok(None);
        }
        // SAFETY: the file is read-only for us and, under the lease, unchanged by others until
        // the watcher has put a copy in the map's place (see the module doc).
        let map = unsafe { memmap2::MmapOptions::new().map(&file)? };
        let lease = Arc::new(Lease {
            addr: map.as_ptr() as usize,
            len: map.len(),
            file: Mutex::new(Some(file)),
            copied: AtomicBool::new(false),
        });
        LEASES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::downgrade(&lease));
        // A writer that came between the lease and the line above signalled a watcher that
        // did not know this lease yet.
        if lease.wanted() {
            lease.copy_and_release();
        }
        Ok(Some(Guarded { map, lease }))
    }
}
