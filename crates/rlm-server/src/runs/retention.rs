//! How much of its runs the server keeps in memory, and the cutting of kept values to size.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// How much of its runs the server keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished runs kept in memory; older ones are read back from their trace files.
    pub finished_runs: usize,
    /// Bytes (of JSON) of all finished runs kept in memory together.
    pub finished_bytes: usize,
    /// Events kept per run; later ones still reach live followers and the trace file.
    pub events_per_run: usize,
    /// Bytes (of JSON) of the events kept per run.
    pub bytes_per_run: usize,
    /// Longest string kept in an event, a question or a message, in bytes.
    pub field_bytes: usize,
    /// Longest answer kept (and served), in bytes.
    pub answer_bytes: usize,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            finished_runs: 100,
            finished_bytes: 128 << 20,
            events_per_run: 5_000,
            bytes_per_run: 8 << 20,
            field_bytes: 64 << 10,
            answer_bytes: 1 << 20,
        }
    }
}

/// Cut `s` to at most `max` bytes (at a character boundary), saying how much was cut.
pub(super) fn cut(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let more = s.len() - end;
    s.truncate(end);
    s.push_str(&format!(
        "… [{more} more bytes not kept by the server; the trace file has them all]"
    ));
}

fn cut_strings(v: &mut serde_json::Value, max: usize) {
    match v {
        serde_json::Value::String(s) => cut(s, max),
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| cut_strings(x, max)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|x| cut_strings(x, max)),
        _ => {}
    }
}

/// `x` with every string in it cut to `max` bytes, and the size of its JSON.
pub(super) fn capped<T: Serialize + DeserializeOwned + Clone>(x: &T, max: usize) -> (T, usize) {
    let Ok(mut v) = serde_json::to_value(x) else {
        return (x.clone(), 0);
    };
    // A run's context is in its trace; the page never shows it.
    if let Some(ctx) = v.get_mut("context").and_then(|c| c.as_object_mut()) {
        ctx.remove("inline");
    }
    cut_strings(&mut v, max);
    let size = serde_json::to_string(&v).map_or(0, |j| j.len());
    match serde_json::from_value(v) {
        Ok(kept) => (kept, size),
        Err(_) => (x.clone(), size),
    }
}
