//! Caps on the sandboxed REPLs alive at once: per run (the root's and its child RLMs') and,
//! optionally, one shared by many runs (a server's).
//!
//! # Why a parent waiting on its children cannot starve them
//!
//! A REPL holds its slot while it waits on its children, and children need slots of their
//! own, so a plain semaphore could fill with parents that all wait on children that wait for a
//! slot. The rule here prevents it. Call a REPL's *height* the number of levels of child REPLs
//! that may still open below it (`max_depth - 1 - depth`: 0 for the deepest children, whose
//! `rlm_query` is a plain sub-call, never another REPL). A REPL of height `h` opens only when at
//! least `h + 1` slots are free, so at least `h` stay free after it opens.
//!
//! Then for every height `h`, the free slots plus the slots held by REPLs lower than `h` are at
//! least `h`: an opening REPL lower than `h` moves a slot from one term to the other, and one of
//! height `h` or more leaves at least `h` free. Take the lowest REPLs alive, of height `h`. If
//! `h` is 0 they wait on nothing but model calls and tools, and finish. Otherwise no REPL is
//! lower, so at least `h` slots are free, exactly what their children (height `h - 1`) need to
//! open. Something can always go on; no set of REPLs can wait on each other for ever. With two
//! limiters (the run's and a shared one) a REPL takes a slot of both at once, under both rules,
//! and the same argument holds for each. A run whose depth needs more slots than a cap has (a
//! chain of `max_depth` REPLs) is refused when it is built.
//!
//! Identical `rlm_query` calls share one child only at the same depth (see
//! [`Tree::child_rlm`](crate::tree::Tree)), so a REPL never waits on one of its own level or above.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

/// A cap on sandboxed REPLs alive at once, which several runs may share: give the same one to
/// each run's builder ([`RlmBuilder::repl_limiter`](crate::RlmBuilder::repl_limiter)), as
/// `rlm serve` does for all its runs. Each run also has its own cap
/// ([`RlmBuilder::max_repls`](crate::RlmBuilder::max_repls)); a REPL opens when both allow it.
/// Cloning gives another handle on the same cap.
#[derive(Clone)]
pub struct ReplLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    capacity: usize,
    free: Mutex<usize>,
    freed: Notify,
}

impl ReplLimiter {
    /// A cap of `capacity` REPLs (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Arc::new(Inner {
                capacity,
                free: Mutex::new(capacity),
                freed: Notify::new(),
            }),
        }
    }

    /// How many REPLs it lets be alive at once.
    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// How many REPLs hold a slot now.
    pub fn in_use(&self) -> usize {
        self.inner.capacity - *self.free()
    }

    fn free(&self) -> std::sync::MutexGuard<'_, usize> {
        self.inner
            .free
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn release(&self) {
        *self.free() += 1;
        self.inner.freed.notify_waiters();
    }
}

impl PartialEq for ReplLimiter {
    /// The same cap (handles on one limiter), not two caps of the same size.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl std::fmt::Debug for ReplLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplLimiter")
            .field("capacity", &self.capacity())
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// The REPL caps of one run: its own, and the shared one it was given, if any.
pub(crate) struct ReplSlots {
    run: ReplLimiter,
    shared: Option<ReplLimiter>,
}

/// A REPL's slot in each cap of its run; given back when dropped.
pub(crate) struct ReplPermit {
    taken: Vec<ReplLimiter>,
}

impl Drop for ReplPermit {
    fn drop(&mut self) {
        for limiter in &self.taken {
            limiter.release();
        }
    }
}

impl ReplSlots {
    pub(crate) fn new(per_run: usize, shared: Option<ReplLimiter>) -> Self {
        Self {
            run: ReplLimiter::new(per_run),
            shared,
        }
    }

    /// The run's own cap.
    #[cfg(test)]
    pub(crate) fn run(&self) -> &ReplLimiter {
        &self.run
    }

    /// Wait for a slot for a REPL of height `height` (levels of child REPLs that may open below
    /// it): one of every cap, taken when each has more than `height` free (see the module's
    /// doc). Cancel-safe: nothing is taken until it returns.
    pub(crate) async fn open(&self, height: u32) -> ReplPermit {
        let need = usize::try_from(height)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        loop {
            // Registered before looking, so a slot freed in between still wakes this.
            let run_freed = self.run.inner.freed.notified();
            let mut run_freed = std::pin::pin!(run_freed);
            run_freed.as_mut().enable();
            let shared_freed = self.shared.as_ref().map(|s| s.inner.freed.notified());
            let mut shared_freed = std::pin::pin!(shared_freed);
            if let Some(n) = shared_freed.as_mut().as_pin_mut() {
                n.enable();
            }
            if let Some(permit) = self.try_open(need) {
                return permit;
            }
            let shared_wait = async {
                match shared_freed.as_mut().as_pin_mut() {
                    Some(n) => n.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = run_freed => {}
                () = shared_wait => {}
            }
        }
    }

    /// Take a slot of every cap if each has at least `need` free, all or none. Locks the run's
    /// cap before the shared one, always in that order.
    fn try_open(&self, need: usize) -> Option<ReplPermit> {
        let mut run = self.run.free();
        let mut shared = self.shared.as_ref().map(ReplLimiter::free);
        if *run < need || shared.as_ref().is_some_and(|s| **s < need) {
            return None;
        }
        *run -= 1;
        if let Some(s) = shared.as_mut() {
            **s -= 1;
        }
        let mut taken = vec![self.run.clone()];
        taken.extend(self.shared.clone());
        Some(ReplPermit { taken })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    async fn opens_soon(slots: &ReplSlots, height: u32) -> Option<ReplPermit> {
        tokio::time::timeout(Duration::from_millis(50), slots.open(height))
            .await
            .ok()
    }

    /// A REPL that may have children keeps room for them: it opens only with more than its
    /// height free, and the deepest children take the last slots.
    #[tokio::test]
    async fn a_repl_opens_only_with_room_left_for_the_levels_below_it() {
        let slots = ReplSlots::new(3, None);
        let root = opens_soon(&slots, 2).await.expect("3 free, 3 needed");
        let child = opens_soon(&slots, 1)
            .await
            .expect("2 free, a child of height 1 needs 2");
        assert!(
            opens_soon(&slots, 1).await.is_none(),
            "1 free: a second child would leave its own children no room"
        );
        let grandchild = opens_soon(&slots, 0).await.expect("the deepest need 1");
        assert_eq!(slots.run().in_use(), 3);
        assert!(opens_soon(&slots, 0).await.is_none(), "the cap holds");
        drop((grandchild, child, root));
        assert_eq!(slots.run().in_use(), 0, "slots come back when dropped");
    }

    /// A waiter opens as soon as a slot comes back; a shared cap binds two runs together.
    #[tokio::test]
    async fn a_shared_cap_binds_every_run_and_a_freed_slot_wakes_a_waiter() {
        let shared = ReplLimiter::new(2);
        let (a, b) = (
            ReplSlots::new(16, Some(shared.clone())),
            ReplSlots::new(16, Some(shared.clone())),
        );
        let one = opens_soon(&a, 0).await.unwrap();
        let _two = opens_soon(&b, 0).await.unwrap();
        assert!(
            opens_soon(&a, 0).await.is_none(),
            "the server's cap is full"
        );
        let waiter = tokio::spawn(async move { b.open(0).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(one);
        let _three = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken when a slot came back")
            .unwrap();
        assert_eq!((shared.in_use(), a.run().in_use()), (2, 0));
    }
}
