//! Running rlm's async work from Python: one tokio runtime per process, and a wait loop that
//! releases the GIL while Rust works, delivers events to Python callbacks on the calling thread,
//! and stops the work on Ctrl-C (`KeyboardInterrupt`) or on a [`CancelToken`].

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::convert;
use crate::errors::Cancelled;

/// How often the waiting thread wakes to look for signals and cancellation.
const POLL: Duration = Duration::from_millis(50);

static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();

/// The process's tokio runtime (started on first use).
pub fn runtime() -> PyResult<&'static tokio::runtime::Runtime> {
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("rlm-rs")
                .build()
                .map_err(|e| format!("cannot start the tokio runtime: {e}"))
        })
        .as_ref()
        .map_err(|e| PyRuntimeError::new_err(e.clone()))
}

/// Cancels a run from another thread (what `arun` uses when its asyncio task is cancelled).
#[pyclass(module = "rlm_rs._native", frozen, from_py_object)]
#[derive(Default, Clone)]
pub struct CancelToken {
    flag: Arc<AtomicBool>,
}

#[pymethods]
impl CancelToken {
    #[new]
    fn new() -> Self {
        Self::default()
    }

    /// Ask the run that waits on this token to stop; it raises `rlm_rs.Cancelled`.
    fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    /// Whether `cancel()` was called.
    #[getter]
    fn cancelled(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
}

/// What wakes the waiting thread.
pub enum Wake {
    /// A run event (JSON) for the Python callback.
    Event(serde_json::Value),
    /// The work finished.
    Done,
}

/// Where events of a run go: a channel to the waiting thread.
#[derive(Clone)]
pub struct EventChannel(Sender<Wake>);

impl EventChannel {
    /// Send one event (dropped when the waiter is gone).
    pub fn send(&self, event: serde_json::Value) {
        let _ = self.0.send(Wake::Event(event));
    }
}

/// A channel for events, and its receiving end for [`wait`].
pub fn event_channel() -> (EventChannel, Receiver<Wake>) {
    let (tx, rx) = std::sync::mpsc::channel();
    (EventChannel(tx), rx)
}

/// Run `work` on the runtime and wait for it with the GIL released. Events arriving on
/// `wakes` (from an [`EventChannel`] made with it) are passed to `on_event` as dicts, on this
/// thread. Ctrl-C (a pending signal), a cancelled `token` or an exception raised by `on_event`
/// stop the work (its future is dropped, which cancels everything it started) and are raised.
pub fn wait<T, F>(
    py: Python<'_>,
    work: F,
    channel: Option<(EventChannel, Receiver<Wake>)>,
    on_event: Option<&Py<PyAny>>,
    token: Option<&CancelToken>,
) -> PyResult<T>
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let rt = runtime()?;
    let (tx, mut rx) = match channel {
        Some((EventChannel(tx), rx)) => (tx, rx),
        None => std::sync::mpsc::channel(),
    };
    let slot: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
    let out = slot.clone();
    let handle = rt.spawn(async move {
        let value = work.await;
        *out.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
        let _ = tx.send(Wake::Done);
    });
    let stop = |err: PyErr| -> PyErr {
        handle.abort();
        // Wait (GIL released) until the work is really dropped, so what it held is free again.
        py.detach(|| {
            while !handle.is_finished() {
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        err
    };
    loop {
        // The receiver moves to the detached closure and back (`&Receiver` is not `Send`).
        let (back, woke) = py.detach(move || {
            let woke = rx.recv_timeout(POLL);
            (rx, woke)
        });
        rx = back;
        match woke {
            Ok(Wake::Done) | Err(RecvTimeoutError::Disconnected) => break,
            Ok(Wake::Event(event)) => {
                if let Some(cb) = on_event {
                    let delivered = convert::json_to_py(py, &event)
                        .and_then(|dict| cb.call1(py, (dict,)).map(drop));
                    if let Err(e) = delivered {
                        return Err(stop(e));
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
        if let Err(e) = py.check_signals() {
            return Err(stop(e));
        }
        if token.is_some_and(|t| t.flag.load(Ordering::SeqCst)) {
            return Err(stop(Cancelled::new_err("the run was cancelled")));
        }
    }
    // Events sent before Done are still queued: deliver them in order.
    while let Ok(Wake::Event(event)) = rx.try_recv() {
        if let Some(cb) = on_event {
            cb.call1(py, (convert::json_to_py(py, &event)?,))?;
        }
    }
    let value = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    value.ok_or_else(|| {
        PyRuntimeError::new_err("the run's task ended without a result (it panicked)")
    })
}
