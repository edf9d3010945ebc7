//! Runs: starting them, following their events as Server-Sent Events, cancelling, listing, and
//! serving traces.
//!
//! Memory is bounded ([`Retention`]): each run keeps at most a number of events and bytes, with
//! every string field cut to a length (the trace file has everything), and only the newest
//! finished runs stay in memory. An older run has moved out to the trace directory: asking for it
//! reads its trace file back.
//!
//! One job per module: [`retention`] (what is kept, cut to size), [`summary`] (how a run ended),
//! [`entry`] (one run, its followers, cancelling it), [`registry`] (the runs kept), [`launch`]
//! (starting a run in its slot), [`request`] (a start request's body) and [`handlers`] (the
//! routes).

pub mod entry;
pub mod handlers;
pub mod launch;
pub mod registry;
pub mod request;
pub mod retention;
pub mod summary;

use std::sync::{Mutex, PoisonError};

pub use entry::{Follow, Msg, RunEntry, WatchGuard};
pub use handlers::{cancel, events, get_run, get_trace, list, list_traces, start};
pub use launch::Launch;
pub use registry::Registry;
pub use request::StartRun;
pub use retention::Retention;
pub use summary::{RunStatus, Summary};

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
