//! Work that must not block the async workers (reading and indexing a context, loading the
//! sandbox engine, looking up lines): run on tokio's blocking threads.

/// Run CPU-heavy `work` on tokio's blocking threads (inline when not on a tokio runtime).
pub(crate) async fn off_runtime<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => handle
            .spawn_blocking(work)
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic())),
        Err(_) => work(),
    }
}
