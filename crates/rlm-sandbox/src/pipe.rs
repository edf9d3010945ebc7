//! A capped in-memory sink for the guest's WASI stdout and stderr (fd 1 and 2).

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Debug, Default)]
struct Buf {
    data: Vec<u8>,
    cap: usize,
    dropped: u64,
}

/// Keeps the first `cap` bytes written and counts the rest. Writes never fail and never block,
/// so an output bomb costs the guest fuel, not the host memory.
#[derive(Debug, Clone)]
pub(crate) struct CappedPipe(Arc<Mutex<Buf>>);

impl CappedPipe {
    pub(crate) fn new(cap: usize) -> Self {
        Self(Arc::new(Mutex::new(Buf {
            data: Vec::new(),
            cap,
            dropped: 0,
        })))
    }

    fn push(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let room = buf.cap.saturating_sub(buf.data.len());
        let keep = room.min(bytes.len());
        buf.data.extend_from_slice(&bytes[..keep]);
        buf.dropped += (bytes.len() - keep) as u64;
    }

    /// Take what was written since the last call: (text, bytes dropped).
    pub(crate) fn take(&self) -> (String, u64) {
        let mut buf = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let data = std::mem::take(&mut buf.data);
        let dropped = std::mem::take(&mut buf.dropped);
        (String::from_utf8_lossy(&data).into_owned(), dropped)
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(1 << 20)
    }
}

#[async_trait::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
