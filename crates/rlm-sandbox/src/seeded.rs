//! The guest's randomness: a keyed blake3 stream per sandbox, so that a REPL rebuilt from its
//! journal draws the same random bytes (`os.urandom`, `uuid4`, `secrets`) as the original did.

use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};

/// A fresh random seed from the process's hash keys, the clock and a counter (for
/// [`SandboxBuilder::seed`](crate::SandboxBuilder::seed) and callers that derive seeds).
pub fn fresh_seed() -> [u8; 32] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut hasher = blake3::Hasher::new();
    hasher.update(&h.finish().to_le_bytes());
    hasher.update(&nanos.to_le_bytes());
    hasher.update(&std::process::id().to_le_bytes());
    *hasher.finalize().as_bytes()
}

/// An endless deterministic byte stream keyed by `seed` and a purpose label. Clones share the
/// stream, so the host can read and move its position (a REPL restored from a checkpoint goes on
/// drawing where the original was when the checkpoint was taken).
#[derive(Clone)]
pub(crate) struct SeededRng(Arc<Mutex<blake3::OutputReader>>);

impl SeededRng {
    pub(crate) fn new(seed: &[u8; 32], purpose: &str) -> Self {
        let mut hasher = blake3::Hasher::new_keyed(seed);
        hasher.update(purpose.as_bytes());
        Self(Arc::new(Mutex::new(hasher.finalize_xof())))
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, blake3::OutputReader> {
        // The reader holds no invariant a panic elsewhere could break.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Draw from `seed`'s stream for `purpose` instead, from byte `position` on.
    pub(crate) fn reseed(&self, seed: &[u8; 32], purpose: &str, position: u64) {
        let mut hasher = blake3::Hasher::new_keyed(seed);
        hasher.update(purpose.as_bytes());
        let mut reader = hasher.finalize_xof();
        reader.set_position(position);
        *self.reader() = reader;
    }

    /// Bytes drawn so far.
    pub(crate) fn position(&self) -> u64 {
        self.reader().position()
    }

    /// Go on drawing from byte `position` of the stream.
    pub(crate) fn set_position(&self, position: u64) {
        self.reader().set_position(position);
    }

    fn fill(&self, dest: &mut [u8]) {
        self.reader().fill(dest);
    }
}

impl rand_core::TryRng for SeededRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Infallible> {
        self.fill(dest);
        Ok(())
    }
}
