//! The connection loop: HTTP/1.1 connections, each in its own task, under a cap that idle or slow
//! clients cannot hold.
//!
//! Every connection is in one of three phases: **idle** (open, no byte of a request yet),
//! **reading** (a request has begun: its headers or its body are arriving) or **serving** (the
//! whole request is in and its answer is being made or sent). Idle and reading connections are
//! bounded in time: the headers must arrive within the header timeout of the connection going
//! idle (hyper's `header_read_timeout`, which is also the idle timeout), and the body must
//! arrive within the request timeout of the request's first byte ([`crate::body`]).
//!
//! At most `max_connections` connections are open. When a new one arrives at the cap, one that
//! is not serving is closed to make room: first those on which no request was ever answered
//! (reading before idle, the longest first), then the others in the same order. Clients that
//! send nothing, or trickle a request, can never keep out a client that asks for `/api/info`,
//! and a client whose requests were answered keeps its connection while any other can go.
//! Serving connections are never closed for room (their number is bounded by the run cap and
//! the cap on event streams); when every connection is serving, the newcomer is answered 503.
//! A semaphore in front of `accept` (the previous design) let idle clients hold every slot.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

const IDLE: u64 = 0;
const READING: u64 = 1;
const SERVING: u64 = 2;
/// How long a new connection that has sent nothing yet is kept from being closed for room.
const GRACE: Duration = Duration::from_millis(250);

/// One open connection: its phase and since when (packed in one atomic), and how to close it.
pub struct Conn {
    epoch: Instant,
    /// `(milliseconds since epoch) << 2 | phase`.
    state: AtomicU64,
    /// A request was answered on it (a client that finishes its requests).
    answered: AtomicBool,
    /// Requests begun on it (an answer's end makes it idle only if no later one began).
    requests: AtomicU64,
    kill: Notify,
}

impl Conn {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX >> 2)
    }

    fn set(&self, phase: u64) {
        self.state
            .store(self.now_ms() << 2 | phase, Ordering::SeqCst);
    }

    fn phase(&self) -> (u64, Instant) {
        let s = self.state.load(Ordering::SeqCst);
        (s & 3, self.epoch + Duration::from_millis(s >> 2))
    }

    /// A request began (its first byte arrived) on an idle connection.
    fn begin_reading(&self) {
        let s = self.state.load(Ordering::SeqCst);
        if s & 3 == IDLE {
            let _ = self.state.compare_exchange(
                s,
                self.now_ms() << 2 | READING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
    }

    /// A request's headers are in; its body is still to come.
    fn body_to_come(&self) {
        if self.phase().0 != READING {
            self.set(READING);
        }
    }

    /// When the current request began to arrive (now, if the connection is not reading).
    pub fn reading_since(&self) -> Instant {
        match self.phase() {
            (READING, since) => since,
            _ => Instant::now(),
        }
    }

    /// The whole request is in: the connection is serving it.
    pub fn serving(&self) {
        self.set(SERVING);
    }
}

/// The connection a request came on (a request extension).
#[derive(Clone)]
pub struct ConnHandle(pub Arc<Conn>);

/// The open connections.
struct Connections {
    epoch: Instant,
    live: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    max: usize,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Close a connection that is not serving, in this order: one on which no request was ever
    /// answered before one that had requests answered (a client that finishes its requests is
    /// likely a real one), reading before idle, the longest first. False when every one is
    /// serving.
    fn evict_one(&self, live: &mut HashMap<u64, Arc<Conn>>) -> bool {
        let oldest = live
            .iter()
            .filter_map(|(id, c)| {
                let (phase, since) = c.phase();
                let answered = c.answered.load(Ordering::SeqCst);
                // A new connection gets a moment to send its first bytes: in a burst of
                // arrivals it may not even have been read yet.
                let fresh = phase == IDLE && !answered && since.elapsed() < GRACE;
                (phase != SERVING && !fresh).then_some(((answered, phase != READING, since), *id))
            })
            .min();
        match oldest.and_then(|((answered, idle, since), id)| {
            tracing::debug!(answered, idle, waited = ?since.elapsed(), "closing a connection to make room");
            live.remove(&id)
        }) {
            Some(c) => {
                c.kill.notify_one();
                true
            }
            None => false,
        }
    }

    /// A place for a new connection: `None` when every open connection is serving.
    fn admit(&self) -> Option<(u64, Arc<Conn>)> {
        let mut live = self.lock();
        if live.len() >= self.max && !self.evict_one(&mut live) {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let conn = Arc::new(Conn {
            epoch: self.epoch,
            state: AtomicU64::new(0),
            answered: AtomicBool::new(false),
            requests: AtomicU64::new(0),
            kill: Notify::new(),
        });
        conn.set(IDLE);
        live.insert(id, conn.clone());
        Some((id, conn))
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }
}

/// Out of file descriptors (EMFILE, ENFILE): an error of the process, not of one client.
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Serve `app` on `listener` until the process ends (see the module docs).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    max_connections: usize,
) {
    let conns = Arc::new(Connections {
        epoch: Instant::now(),
        live: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
        max: max_connections.max(1),
    });
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors: make room as at the cap, then go on accepting.
                if out_of_descriptors(&e) {
                    let mut live = conns.lock();
                    conns.evict_one(&mut live);
                }
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some((id, conn)) = conns.admit() else {
            tracing::debug!("every connection is serving: refusing a new one (503)");
            tokio::spawn(refuse_busy(stream));
            continue;
        };
        let (app, conns) = (app.clone(), conns.clone());
        tokio::spawn(async move {
            serve_one(stream, app, conn, header_timeout).await;
            conns.remove(id);
        });
    }
}

/// Every connection is serving: say so (503) and close.
async fn refuse_busy(mut stream: TcpStream) {
    let body = r#"{"error":{"message":"the server is serving as many connections as it allows; retry in a moment","type":"server_error"}}"#;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

async fn serve_one(stream: TcpStream, app: Router, conn: Arc<Conn>, header_timeout: Duration) {
    let io = hyper_util::rt::TokioIo::new(Watched {
        inner: stream,
        conn: conn.clone(),
    });
    let handle = ConnHandle(conn.clone());
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let (app, handle) = (app.clone(), handle.clone());
        async move {
            let body = has_body(&req);
            let seq = handle.0.requests.fetch_add(1, Ordering::SeqCst) + 1;
            if body {
                handle.0.body_to_come();
            } else {
                handle.0.serving();
            }
            req.extensions_mut().insert(handle.clone());
            let mut response = match app.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            // Answered without reading the body (a refusal before it): the connection closes
            // after this answer, and says so, so a client does not send its next request on it.
            if body && handle.0.phase().0 != SERVING {
                response.headers_mut().insert(
                    axum::http::header::CONNECTION,
                    axum::http::HeaderValue::from_static("close"),
                );
            }
            Ok::<_, Infallible>(response.map(|body| Tracked {
                inner: body,
                _idle: IdleOnDrop(handle.0, seq),
            }))
        }
    });
    let serving = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::select! {
        biased;
        () = conn.kill.notified() => tracing::debug!("connection closed to make room"),
        r = serving => if let Err(e) = r {
            tracing::debug!(error = %e, "connection ended");
        },
    }
}

/// Whether a request says it has a body.
fn has_body(req: &Request<Incoming>) -> bool {
    let h = req.headers();
    h.contains_key(axum::http::header::TRANSFER_ENCODING)
        || h.get(axum::http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The socket, noting when a request's first byte arrives on an idle connection.
struct Watched {
    inner: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.conn.begin_reading();
        }
        r
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Sets its connection idle when the answer to request number `.1` has been sent (or given up),
/// unless a later request began meanwhile (hyper may drop an answer's body late).
struct IdleOnDrop(Arc<Conn>, u64);

impl Drop for IdleOnDrop {
    fn drop(&mut self) {
        self.0.answered.store(true, Ordering::SeqCst);
        if self.0.requests.load(Ordering::SeqCst) == self.1 {
            self.0.set(IDLE);
        }
    }
}

/// An answer's body, which marks its connection idle once it is dropped.
struct Tracked {
    inner: Body,
    _idle: IdleOnDrop,
}

impl HttpBody for Tracked {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
