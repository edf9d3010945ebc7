//! Guest memory: the per-REPL cap, sized from what the REPL holds, and a budget shared by every
//! REPL of a process.
//!
//! The rule. A REPL may grow its linear memory to
//! `min(max_memory_bytes, memory_bytes + WHOLE_FACTOR × whole_bytes)`, where `whole_bytes` is
//! what the contexts it holds as real Python objects take in the guest ([`Context::guest_bytes`]:
//! for a text, its characters times CPython's bytes per character, 1 for Latin-1, 2 for the
//! BMP, 4 otherwise). A context loads whole when the REPL's cap with it stays within
//! `max_memory_bytes` (4 GiB, the wasm32 ceiling, by default) and the shared budget has room for
//! it; otherwise it is a lazy object served by the host. The factor 3 covers the load itself
//! (the text arrives in pieces that are joined: two copies at the peak) and one more full-size
//! copy made by model code (`context.lower()`, `context.splitlines()`).
//!
//! The budget. Every REPL's memory is charged, as it grows, to one [`MemoryPool`] (by default
//! the engine's, see [`crate::EngineOptions::memory_budget`]); a growth the pool cannot cover
//! fails like any allocation past the cap (Python `MemoryError`, the REPL lives on), and the
//! memory goes back to the pool when the REPL is dropped. Child RLMs and concurrent REPLs thus
//! share one total that the operator sets.
//!
//! [`Context::guest_bytes`]: crate::Context::guest_bytes

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

/// How many times its guest size a context that loads whole adds to its REPL's memory cap.
pub const WHOLE_FACTOR: u64 = 3;

/// The largest linear memory a wasm32 guest can address: 4 GiB.
pub const WASM32_MAX_MEMORY: u64 = 4 << 30;

/// A memory budget shared by many REPLs (and the child RLMs of a run): the total bytes of guest
/// linear memory they may hold at once.
#[derive(Debug)]
pub struct MemoryPool {
    total: u64,
    used: AtomicU64,
}

impl MemoryPool {
    /// A pool of `total_bytes`.
    pub fn new(total_bytes: u64) -> Arc<Self> {
        Arc::new(Self {
            total: total_bytes,
            used: AtomicU64::new(0),
        })
    }

    /// The default budget: `RLM_MEMORY_BUDGET_MB` when set, else three quarters of the
    /// machine's memory (`/proc/meminfo`), else 8 GiB.
    pub fn default_total() -> u64 {
        if let Some(mb) = std::env::var("RLM_MEMORY_BUDGET_MB")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            return mb.saturating_mul(1 << 20);
        }
        physical_memory().map_or(8 << 30, |m| m / 4 * 3)
    }

    /// Bytes in the budget.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes held by live REPLs now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Bytes still free.
    pub fn available(&self) -> u64 {
        self.total.saturating_sub(self.used())
    }

    fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&v| v <= self.total)
            })
            .is_ok()
    }

    fn give_back(&self, n: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// Host memory held on behalf of one REPL (its compiled search patterns), charged to the same
/// pool as guest memory, so host work that guests cause stays within the process's budget too.
/// Returned to the pool when dropped.
#[derive(Debug)]
pub(crate) struct HostCharge {
    pool: Arc<MemoryPool>,
    held: u64,
}

impl HostCharge {
    pub(crate) fn new(pool: Arc<MemoryPool>) -> Self {
        Self { pool, held: 0 }
    }

    /// Hold `bytes` in all: take the increase from the pool (false, holding what it held, when
    /// the pool cannot cover it), or give the decrease back.
    pub(crate) fn set(&mut self, bytes: u64) -> bool {
        if bytes > self.held {
            if !self.pool.try_take(bytes - self.held) {
                return false;
            }
        } else {
            self.pool.give_back(self.held - bytes);
        }
        self.held = bytes;
        true
    }
}

impl Drop for HostCharge {
    fn drop(&mut self) {
        self.pool.give_back(self.held);
    }
}

/// Total physical memory, from `/proc/meminfo` (Linux).
fn physical_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The store limiter of one REPL: its memory cap (all its linear memories together), charged to
/// a shared pool; tables and instances as [`StoreLimits`] allows.
pub(crate) struct GuestMemory {
    cap: u64,
    held: u64,
    pool: Arc<MemoryPool>,
    /// Set when a growth failed because the shared pool was empty (not the REPL's own cap).
    pub(crate) pool_refused: bool,
    others: StoreLimits,
}

impl GuestMemory {
    pub(crate) fn new(cap: u64, pool: Arc<MemoryPool>) -> Self {
        Self {
            cap,
            held: 0,
            pool,
            pool_refused: false,
            others: StoreLimitsBuilder::new()
                .instances(64)
                .tables(64)
                .memories(8)
                .table_elements(1 << 20)
                .trap_on_grow_failure(false)
                .build(),
        }
    }

    /// Raise (or lower) the cap, e.g. when a context is added.
    pub(crate) fn set_cap(&mut self, cap: u64) {
        self.cap = cap;
    }

    /// Bytes of linear memory this REPL holds.
    pub(crate) fn held(&self) -> u64 {
        self.held
    }

    /// The pool this REPL's memory is charged to.
    pub(crate) fn pool(&self) -> &Arc<MemoryPool> {
        &self.pool
    }
}

impl Drop for GuestMemory {
    fn drop(&mut self) {
        self.pool.give_back(self.held);
    }
}

impl ResourceLimiter for GuestMemory {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|m| desired > m) || desired < current {
            return Ok(false);
        }
        let delta = (desired - current) as u64;
        if self.held.saturating_add(delta) > self.cap {
            return Ok(false);
        }
        if !self.pool.try_take(delta) {
            self.pool_refused = true;
            return Ok(false);
        }
        self.held += delta;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.others.table_growing(current, desired, maximum)
    }

    fn instances(&self) -> usize {
        self.others.instances()
    }

    fn tables(&self) -> usize {
        self.others.tables()
    }

    fn memories(&self) -> usize {
        self.others.memories()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_charged_to_the_pool_and_returned_on_drop() {
        let pool = MemoryPool::new(100);
        let mut a = GuestMemory::new(80, pool.clone());
        let mut b = GuestMemory::new(80, pool.clone());
        assert!(a.memory_growing(0, 60, None).unwrap());
        assert_eq!(pool.used(), 60);
        // Over b's own cap.
        assert!(!b.memory_growing(0, 90, None).unwrap());
        assert!(!b.pool_refused);
        // Within b's cap, but the pool has only 40 left.
        assert!(!b.memory_growing(0, 50, None).unwrap());
        assert!(b.pool_refused);
        assert!(b.memory_growing(0, 40, None).unwrap());
        assert_eq!(pool.available(), 0);
        drop(a);
        assert_eq!(pool.used(), 40);
        assert!(b.memory_growing(40, 80, None).unwrap());
        assert_eq!(b.held(), 80);
        drop(b);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn host_charges_take_from_the_pool_refuse_past_it_and_give_back_on_drop() {
        let pool = MemoryPool::new(100);
        let mut a = HostCharge::new(pool.clone());
        assert!(a.set(60));
        let mut b = HostCharge::new(pool.clone());
        assert!(!b.set(50), "only 40 left");
        assert!(b.set(40));
        assert_eq!(pool.used(), 100);
        assert!(a.set(10));
        assert_eq!(pool.used(), 50);
        drop(a);
        drop(b);
        assert_eq!(pool.used(), 0);
    }
}
