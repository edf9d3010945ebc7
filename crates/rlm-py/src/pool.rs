//! The threads that call Python functions for the sandbox (custom tools, and the `llm_query` /
//! `rlm_query` handlers of a `Sandbox`): bounded pools per process, not tokio's shared blocking
//! pool.
//!
//! Python threads cannot be killed, so a function that never returns keeps its thread. Here it
//! keeps one of the pool's few threads and nothing else: a call waits while every thread is busy
//! with a call that is still wanted, and fails at once, saying why, when every thread is held by
//! a call that was given up (its step ended) and has not returned. Search, model calls and the
//! rest of the host never wait on these threads. A thread that finished a call waits a while for
//! the next one, so calls do not pay for starting a thread.
//!
//! A call given up while its function runs Python code gets [`CallAbandoned`] raised in it (by
//! `PyThreadState_SetAsyncExc`), so a function looping in Python frees its thread; one blocked
//! in C (`time.sleep`, a lock, a socket read) keeps it until that C call returns.

use std::collections::VecDeque;
use std::ffi::{c_long, c_ulong};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::PyBaseException;
use pyo3::prelude::*;
use tokio::sync::{Notify, oneshot};

create_exception!(
    _native,
    CallAbandoned,
    PyBaseException,
    "Raised inside a Python function the sandbox called (a custom tool) when the step that \
     called it was given up (its deadline passed, or it was stopped): nothing waits for the \
     result any more. A BaseException, like KeyboardInterrupt, so `except Exception` does not \
     swallow it; let it propagate so the function's thread is free for other calls."
);

/// Threads a pool runs calls on at once, by default: as many as an RLM run's default
/// concurrency, so that its sub-RLMs' tool calls do not wait on each other.
pub const DEFAULT_THREADS: usize = 16;

/// The most threads a pool may be given.
pub const MAX_THREADS: usize = 1024;

/// How long a thread with no call waits for the next before it ends.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// A bounded set of threads for calls into Python.
pub struct Pool {
    /// What the calls are, for messages ("tool").
    what: &'static str,
    /// The Python function that sets the pool's size, for messages.
    resize_with: &'static str,
    counts: Mutex<Counts>,
    /// Threads waiting for a call, and calls handed to them.
    idle: Mutex<Idle>,
    ready: Condvar,
    /// Woken when a thread frees up, a call is given up, or the size changes.
    changed: Notify,
    /// Raises [`CallAbandoned`] in given-up calls (a thread started on first need).
    canceller: OnceLock<Result<Sender<Arc<Job>>, String>>,
}

struct Counts {
    /// Threads calls may use at once.
    size: usize,
    /// Calls given a thread and not yet done with it (at most `size`, unless it was lowered).
    busy: usize,
    /// Of those, calls whose caller gave up on them.
    abandoned: usize,
}

/// Threads of a pool that wait for a call, and calls handed to them (never more than waiting
/// threads).
struct Idle {
    waiting: usize,
    tasks: VecDeque<Task>,
}

/// A call ready for a thread: what runs, and what frees its place in the counts after.
struct Task {
    run: Box<dyn FnOnce() + Send>,
    free: FreeOnDrop,
}

/// One call, as its caller and its thread both see it.
struct Job {
    state: Mutex<JobState>,
}

#[derive(Default)]
struct JobState {
    /// The Python thread id of the thread running the function, while it runs.
    thread: Option<c_ulong>,
    /// The function returned (or will never be called).
    finished: bool,
    /// The caller gave up waiting.
    abandoned: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Pool {
    /// A pool of `size` threads, for calls described as `what` ("tool"), resized by the Python
    /// function `resize_with` (for messages).
    pub const fn new(what: &'static str, size: usize, resize_with: &'static str) -> Self {
        Self {
            what,
            resize_with,
            counts: Mutex::new(Counts {
                size,
                busy: 0,
                abandoned: 0,
            }),
            idle: Mutex::new(Idle {
                waiting: 0,
                tasks: VecDeque::new(),
            }),
            ready: Condvar::new(),
            changed: Notify::const_new(),
            canceller: OnceLock::new(),
        }
    }

    /// Set its size (1 to [`MAX_THREADS`]); returns the size before. Calls running now keep
    /// their threads; a smaller size applies as they return.
    pub fn set_size(&self, size: usize) -> Result<usize, String> {
        if !(1..=MAX_THREADS).contains(&size) {
            return Err(format!(
                "{} threads must be between 1 and {MAX_THREADS}, not {size}",
                self.what
            ));
        }
        let before = std::mem::replace(&mut lock(&self.counts).size, size);
        self.changed.notify_waiters();
        Ok(before)
    }

    /// Call `f` with the GIL on one of the pool's threads and wait for its result. Dropping the
    /// returned future gives the call up: `f` is not started if it had not started, and
    /// [`CallAbandoned`] is raised in it if it runs Python code. Fails without waiting when
    /// every thread is held by a call given up earlier.
    pub async fn call<T, F>(&'static self, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(Python<'_>) -> T + Send + 'static,
    {
        self.take_thread().await?;
        let job = Arc::new(Job {
            state: Mutex::new(JobState::default()),
        });
        // Frees the thread in the counts when the closure ends, or when it is dropped unrun.
        let free = FreeOnDrop {
            pool: self,
            job: job.clone(),
        };
        let (tx, rx) = oneshot::channel();
        let run = {
            let job = job.clone();
            Box::new(move || {
                if let Some(value) = run_job(&job, f) {
                    let _ = tx.send(value);
                }
            })
        };
        self.dispatch(Task { run, free })?;
        // From here on, dropping this future gives the call up.
        let mut given_up = GiveUpOnDrop {
            pool: self,
            job: Some(job),
        };
        let out = rx.await;
        given_up.job = None;
        out.map_err(|_| {
            format!(
                "the {} did not finish: Python is shutting down, or the call failed on the host",
                self.what
            )
        })
    }

    /// Hand `task` to a thread waiting for one, else to a new thread.
    fn dispatch(&'static self, task: Task) -> Result<(), String> {
        let mut idle = lock(&self.idle);
        if idle.waiting > idle.tasks.len() {
            idle.tasks.push_back(task);
            drop(idle);
            self.ready.notify_one();
            return Ok(());
        }
        drop(idle);
        // When the thread cannot start, the task is dropped unrun, which frees its place.
        std::thread::Builder::new()
            .name(format!("rlm-py-{}", self.what))
            .spawn(move || self.work(task))
            .map(drop)
            .map_err(|e| format!("cannot start a thread for the {} call: {e}", self.what))
    }

    /// A thread of the pool: run `task`, then the tasks handed to it, until none comes for
    /// [`KEEP_ALIVE`].
    fn work(&'static self, mut task: Task) {
        loop {
            let Task { run, free } = task;
            // It does not unwind: `run_job` catches the function's panics.
            run();
            // Waiting before its place is freed, so the next call finds this thread rather than
            // starting another: the pool's threads never outnumber its size.
            lock(&self.idle).waiting += 1;
            drop(free);
            let mut idle = lock(&self.idle);
            task = loop {
                if let Some(next) = idle.tasks.pop_front() {
                    idle.waiting -= 1;
                    break next;
                }
                let (guard, waited) = self
                    .ready
                    .wait_timeout(idle, KEEP_ALIVE)
                    .unwrap_or_else(PoisonError::into_inner);
                idle = guard;
                if waited.timed_out() && idle.tasks.is_empty() {
                    idle.waiting -= 1;
                    return;
                }
            };
        }
    }

    /// Wait for a free thread (counted as busy once this returns `Ok`).
    async fn take_thread(&self) -> Result<(), String> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut c = lock(&self.counts);
                if c.busy < c.size {
                    c.busy += 1;
                    return Ok(());
                }
                if c.abandoned >= c.size {
                    return Err(format!(
                        "all {} threads for Python {} calls are held by earlier calls that were \
                         given up (their steps ended) and have not returned: a {} that never \
                         returns, or one blocked in C code. Make the {} return (or time out), or \
                         raise the pool's size with {}",
                        c.size, self.what, self.what, self.what, self.resize_with
                    ));
                }
            }
            changed.await;
        }
    }

    /// The thread that raises [`CallAbandoned`] in given-up calls.
    fn canceller(&'static self) -> Result<&'static Sender<Arc<Job>>, &'static String> {
        self.canceller
            .get_or_init(|| {
                let (tx, rx) = channel::<Arc<Job>>();
                std::thread::Builder::new()
                    .name(format!("rlm-py-{}-cancel", self.what))
                    .spawn(move || {
                        for job in rx {
                            // Nothing to do once Python shuts down.
                            if Python::try_attach(|py| interrupt(py, &job)).is_none() {
                                return;
                            }
                        }
                    })
                    .map(|_| tx)
                    .map_err(|e| format!("cannot start the thread that stops given-up calls: {e}"))
            })
            .as_ref()
    }
}

/// Run `f` for `job` on this thread, unless the job was given up before it started. The job's
/// state changes only with the GIL held, so [`interrupt`] never meets a function that has
/// returned, and an exception it raised too late is cleared before this thread lets go of the
/// GIL (it would otherwise fire in the next Python code the thread runs).
fn run_job<T>(job: &Job, f: impl FnOnce(Python<'_>) -> T) -> Option<T> {
    Python::try_attach(|py| {
        {
            let mut s = lock(&job.state);
            if s.abandoned {
                return None;
            }
            // SAFETY: the GIL is held (`py`); the call only reads this thread's id.
            s.thread = Some(unsafe { pyo3::ffi::PyThread_get_thread_ident() });
        }
        let value = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(py)));
        {
            let mut s = lock(&job.state);
            if let Some(id) = s.thread.take() {
                // SAFETY: the GIL is held; a null exception clears a pending one of this thread.
                unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(id as c_long, std::ptr::null_mut()) };
            }
            s.finished = true;
        }
        // A panic drops the sender, which tells the caller the call failed on the host.
        value.ok()
    })
    .flatten()
}

/// Raise [`CallAbandoned`] in `job`'s function if it is still running.
fn interrupt(py: Python<'_>, job: &Job) {
    let s = lock(&job.state);
    if let (Some(id), false) = (s.thread, s.finished) {
        let kind = py.get_type::<CallAbandoned>();
        // SAFETY: the GIL is held, and the thread `id` is inside `run_job`'s attached section
        // (its state changes only with the GIL), so it has a live thread state. The exception
        // type is borrowed (CPython takes its own reference).
        unsafe { pyo3::ffi::PyThreadState_SetAsyncExc(id as c_long, kind.as_ptr()) };
    }
}

/// Gives a call up when its caller's future is dropped before the result came.
struct GiveUpOnDrop {
    pool: &'static Pool,
    /// `None` once the result came.
    job: Option<Arc<Job>>,
}

impl Drop for GiveUpOnDrop {
    fn drop(&mut self) {
        let Some(job) = self.job.take() else {
            return;
        };
        let mut s = lock(&job.state);
        if s.finished || s.abandoned {
            return;
        }
        s.abandoned = true;
        lock(&self.pool.counts).abandoned += 1;
        let running = s.thread.is_some();
        drop(s);
        self.pool.changed.notify_waiters();
        if running && let Ok(tx) = self.pool.canceller() {
            let _ = tx.send(job);
        }
    }
}

/// Frees a call's place in the counts when its thread is done with it (or it never ran).
struct FreeOnDrop {
    pool: &'static Pool,
    job: Arc<Job>,
}

impl Drop for FreeOnDrop {
    fn drop(&mut self) {
        let mut s = lock(&self.job.state);
        s.finished = true;
        s.thread = None;
        let mut c = lock(&self.pool.counts);
        c.busy -= 1;
        if s.abandoned {
            c.abandoned -= 1;
        }
        drop(c);
        drop(s);
        self.pool.changed.notify_waiters();
    }
}
