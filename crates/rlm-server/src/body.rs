//! Request bodies, read bounded: in size (413 before a byte is read when the declared length is
//! too large), in time (the whole request within the request timeout of its first byte, else
//! 408), and in memory (bodies held at once, all requests together, within a budget: 429 past
//! it). Then parsed off the async workers ([`parse`]), so a large body never stalls other
//! requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{StatusCode, header};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ApiError;
use crate::conn::ConnHandle;

/// Bytes per permit of the body budget.
const UNIT: usize = 1 << 10;
/// A body of unknown length takes budget in steps of this size.
const STEP: usize = 1 << 20;

/// How request bodies are bounded.
#[derive(Clone)]
pub struct BodyLimits {
    /// Largest body, in bytes.
    pub max_bytes: usize,
    /// The whole request (headers and body) arrives within this time of its first byte.
    pub request_timeout: Duration,
    /// Bytes of bodies held at once, all requests together (one permit per KiB).
    budget: Arc<Semaphore>,
}

impl BodyLimits {
    /// Bodies of at most `max_bytes`, each arriving within `request_timeout`, at most
    /// `budget_bytes` of them held at once.
    pub fn new(max_bytes: usize, request_timeout: Duration, budget_bytes: usize) -> Self {
        let permits = (budget_bytes.max(max_bytes) / UNIT).clamp(1, Semaphore::MAX_PERMITS);
        Self {
            max_bytes,
            request_timeout,
            budget: Arc::new(Semaphore::new(permits)),
        }
    }

    fn too_large(&self, bytes: u64) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is {bytes} bytes or more; this server accepts at most {} \
                 (rlm serve --max-body-mb)",
                self.max_bytes
            ),
        )
    }

    /// Budget for `bytes` more bytes, at once or not at all.
    fn take(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX);
        self.budget
            .clone()
            .try_acquire_many_owned(units)
            .map_err(|_| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "the server is reading as many request bodies as its memory budget allows; \
                 retry in a moment",
                )
            })
    }
}

/// A request body read whole, with the budget it holds until it is dropped.
pub struct Bounded {
    /// The bytes.
    pub bytes: Vec<u8>,
    _budget: Vec<OwnedSemaphorePermit>,
}

/// Read `req`'s body within `limits` (see the module docs); the request's connection is then
/// serving it.
pub async fn read(limits: &BodyLimits, req: Request) -> Result<Bounded, ApiError> {
    let conn = req.extensions().get::<ConnHandle>().cloned();
    let declared = match req.headers().get(header::CONTENT_LENGTH) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad("the Content-Length header is not a number"))?,
        ),
    };
    if let Some(n) = declared
        && n > limits.max_bytes as u64
    {
        return Err(limits.too_large(n));
    }
    let since = conn
        .as_ref()
        .map_or_else(Instant::now, |c| c.0.reading_since());
    let deadline = tokio::time::Instant::from_std(since + limits.request_timeout);
    // A declared length is reserved (and allocated) at once; an unknown one in steps.
    let reserve = declared.map_or(0, |n| n as usize);
    let mut budget = vec![limits.take(reserve)?];
    let mut held = reserve;
    let mut bytes = Vec::with_capacity(reserve);
    let mut body = req.into_body();
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    format!(
                        "the request did not arrive whole within {} s (rlm serve \
                         --request-timeout-secs)",
                        limits.request_timeout.as_secs_f64()
                    ),
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad(format!(
                    "the request body could not be read: {e}"
                )));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        let len = bytes.len() + data.len();
        if len > limits.max_bytes {
            return Err(limits.too_large(len as u64));
        }
        if len > held {
            let more = (len - held).max(STEP).min(limits.max_bytes - held);
            budget.push(limits.take(more)?);
            held += more;
            bytes.reserve_exact(held - bytes.len());
        }
        bytes.extend_from_slice(&data);
    }
    if let Some(c) = conn {
        c.0.serving();
    }
    Ok(Bounded {
        bytes,
        _budget: budget,
    })
}

/// Run `work` (a parse) on a blocking thread with `body`, which it owns: the body and its
/// budget are held until the work ends, even when the client has gone.
pub async fn parse<T: Send + 'static>(
    body: Bounded,
    work: impl FnOnce(Bounded) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || work(body))
        .await
        .unwrap_or_else(|e| {
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the request failed: {e}"),
            ))
        })
}

#[cfg(test)]
mod tests {
    use axum::body::Body;

    use super::*;

    fn request(body: Body, length: Option<usize>) -> Request {
        let mut b = Request::builder().method("POST").uri("/api/runs");
        if let Some(n) = length {
            b = b.header(header::CONTENT_LENGTH, n);
        }
        b.body(body).unwrap()
    }

    #[tokio::test]
    async fn bodies_are_bounded_in_size_time_and_memory() {
        let limits = BodyLimits::new(1 << 20, Duration::from_millis(300), 2 << 20);
        // Too large by its declared length: refused before a byte is read.
        let never =
            Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
        let e = read(&limits, request(never, Some(2 << 20)))
            .await
            .err()
            .unwrap();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        // Too large as it arrives (no length declared).
        let big = Body::from(vec![b'x'; (1 << 20) + 1]);
        let e = read(&limits, request(big, None)).await.err().unwrap();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
        // Too slow: the whole body within the request timeout.
        let never =
            Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
        let e = read(&limits, request(never, Some(10))).await.err().unwrap();
        assert_eq!(e.status, StatusCode::REQUEST_TIMEOUT);
        // Memory: two bodies of 1 MiB are held at once; a third waits for one to go.
        let one = || request(Body::from(vec![b'x'; 1 << 20]), Some(1 << 20));
        let a = read(&limits, one()).await.unwrap();
        let b = read(&limits, one()).await.unwrap();
        let e = read(&limits, one()).await.err().unwrap();
        assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);
        drop(a);
        assert_eq!(read(&limits, one()).await.unwrap().bytes.len(), 1 << 20);
        drop(b);
    }
}
