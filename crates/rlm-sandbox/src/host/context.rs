//! The `context` interface: reads and regex searches of the contexts, which stay on the host.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::HostState;
use crate::bindings::rlm::sandbox::context as wit_ctx;
use crate::context::{
    Context, LocalId, MAX_PATTERN_BYTES, Node, PathStep, Pattern, SearchRequest, Stopped,
    search_hits, text_spans,
};
use crate::memory::{HostCharge, MemoryPool};

/// Most match spans one `spans` call returns (1.6 MB here, about 6 MB of Python ints in the
/// guest).
const MAX_SPANS: u32 = 100_001;
/// Texts up to this many bytes are searched for a substring (or read for their characters)
/// right on the async worker: a fraction of a millisecond.
const INLINE_SUBSTRING_BYTES: u64 = 1 << 20;
/// Texts up to this many bytes are searched for a pattern right on the async worker (a few
/// milliseconds at the slowest engine's speed).
const INLINE_REGEX_BYTES: u64 = 64 << 10;
/// Search patterns a REPL keeps compiled, at most.
const PATTERN_CACHE_ENTRIES: usize = 16;
/// Heap bytes of the patterns a REPL keeps compiled (programs and caches), at most; the newest
/// is kept whatever its size (its own limits bound it: see `context/pattern.rs`).
const PATTERN_CACHE_BYTES: usize = 64 << 20;

/// The search patterns one REPL compiled, newest last: the ones that compiled and the ones that
/// were refused (so a loop that sends the same bad pattern pays for it once), within
/// [`PATTERN_CACHE_ENTRIES`] and [`PATTERN_CACHE_BYTES`], and charged to the REPL's memory
/// pool.
pub(crate) struct PatternCache {
    entries: VecDeque<(PatternKey, Compiled)>,
    charge: HostCharge,
    /// Patterns compiled (or refused after parsing) so far.
    compiles: u64,
}

/// A pattern as the guest sent it, and whether it ignores case.
type PatternKey = (String, bool);

/// A compiled pattern, or why it was refused.
type Compiled = Result<Arc<Pattern>, String>;

impl PatternCache {
    pub(crate) fn new(pool: Arc<MemoryPool>) -> Self {
        Self {
            entries: VecDeque::new(),
            charge: HostCharge::new(pool),
            compiles: 0,
        }
    }

    /// The compiled `pattern`, or why it cannot be.
    fn get(&mut self, pattern: &str, ignore_case: bool) -> Result<Arc<Pattern>, String> {
        if pattern.len() > MAX_PATTERN_BYTES {
            // Refused by its length alone: nothing to remember but the answer.
            return Pattern::compile(pattern, ignore_case).map(Arc::new);
        }
        if let Some(i) = self
            .entries
            .iter()
            .position(|((p, ic), _)| *ic == ignore_case && p == pattern)
        {
            let entry = self.entries.remove(i).unwrap_or_else(|| unreachable!());
            let found = entry.1.clone();
            self.entries.push_back(entry);
            return found;
        }
        let compiled = Pattern::compile(pattern, ignore_case).map(Arc::new);
        self.compiles += 1;
        self.entries
            .push_back(((pattern.to_string(), ignore_case), compiled.clone()));
        // Caches grow as patterns are used: settled on every call.
        loop {
            let bytes = self.bytes();
            let over = self.entries.len() > PATTERN_CACHE_ENTRIES
                || (self.entries.len() > 1 && bytes > PATTERN_CACHE_BYTES);
            if !over && self.charge.set(bytes as u64) {
                break;
            }
            if self.entries.len() == 1 {
                self.entries.clear();
                self.charge.set(0);
                return Err(format!(
                    "the process's memory budget (RLM_MEMORY_BUDGET_MB) has no room for this \
                     pattern's {} KiB on the host now; try a simpler pattern, or later",
                    bytes >> 10
                ));
            }
            self.entries.pop_front();
        }
        compiled
    }

    /// Heap bytes the kept patterns hold.
    fn bytes(&self) -> usize {
        self.entries
            .iter()
            .map(|((p, _), r)| p.len() + r.as_ref().map_or_else(String::len, |c| c.memory_usage()))
            .sum()
    }
}

/// Sets a cancel flag when dropped: work handed to a blocking thread stops when the step that
/// waits for it ends, however it ends (its time ran out, or the step itself was dropped).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl HostState {
    fn resolve(&self, node: u64) -> Result<(&Context, LocalId), String> {
        let slot = (node >> 32) as usize;
        let local = (node & 0xFFFF_FFFF) as LocalId;
        let ctx = self
            .contexts
            .get(slot)
            .ok_or_else(|| format!("no context node {node}"))?;
        ctx.node(local)
            .ok_or_else(|| format!("no context node {node}"))?;
        Ok((ctx, local))
    }

    /// The context holding `node`, shared (for work off the async workers), and the node's id.
    fn shared(&self, node: u64) -> Result<(Arc<Context>, LocalId), String> {
        let (_, local) = self.resolve(node)?;
        Ok((self.contexts[(node >> 32) as usize].clone(), local))
    }

    /// Run `work` on a blocking thread, so the async workers go on, within the step's remaining
    /// time, one such work per REPL at a time (work given up on must finish, or see its cancel
    /// flag, before the next starts). `None` when the time ran out: `work`'s cancel flag is then
    /// set. A thread that failed is an error naming `what`.
    fn off_the_workers<T: Send + 'static>(
        &self,
        what: &'static str,
        work: impl FnOnce(&AtomicBool) -> T + Send + 'static,
    ) -> impl std::future::Future<Output = Result<Option<T>, String>> + Send + 'static {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let lock = self.search_lock.clone();
        async move {
            let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
            let flag = cancel.0.clone();
            let job = async move {
                let guard = lock.lock_owned().await;
                tokio::task::spawn_blocking(move || {
                    let _one_at_a_time = guard;
                    work(&flag)
                })
                .await
            };
            match tokio::time::timeout(remaining, job).await {
                Ok(Ok(done)) => Ok(Some(done)),
                Ok(Err(e)) => Err(format!("{what} failed on the host: {e}")),
                // `cancel` stops the work as it is dropped.
                Err(_) => Ok(None),
            }
        }
    }

    fn text(&self, node: u64) -> Result<&crate::context::TextDoc, String> {
        let (ctx, local) = self.resolve(node)?;
        match ctx.node(local) {
            Some(Node::Text(t)) => Ok(t),
            _ => Err(format!("context node {node} is not text")),
        }
    }

    /// Run `work` over `bytes` of text: right here when they are few (a scan of them takes well
    /// under a millisecond, less than handing it to another thread), else off the async
    /// workers ([`HostState::off_the_workers`]).
    fn scan<T: Send + 'static>(
        &self,
        what: &'static str,
        bytes: u64,
        inline_up_to: u64,
        work: impl FnOnce(&AtomicBool) -> T + Send + 'static,
    ) -> impl std::future::Future<Output = Result<Option<T>, String>> + Send + 'static {
        use futures::future::Either;
        if bytes <= inline_up_to {
            let done = work(&AtomicBool::new(false));
            return Either::Left(std::future::ready(Ok(Some(done))));
        }
        Either::Right(self.off_the_workers(what, work))
    }

    /// Bytes of text node `node` between characters `start` and `end` (0 for other nodes).
    fn text_bytes(&self, node: u64, start: u64, end: u64) -> u64 {
        self.text(node).map_or(0, |t| {
            let end = end.min(t.chars());
            (t.byte_of(end) - t.byte_of(start.min(end))) as u64
        })
    }

    /// The step's time ran out during `what`.
    fn out_of_time(&self, what: &str) -> String {
        format!(
            "{what} did not finish within the step's time limit ({:.1} s); work on a smaller \
             part of the context",
            self.limits.step_timeout.as_secs_f64()
        )
    }
}

impl wit_ctx::Host for HostState {
    fn root(&mut self, slot: u32) -> Result<u64, String> {
        self.charge(1)?;
        if (slot as usize) < self.contexts.len() {
            Ok(u64::from(slot) << 32)
        } else {
            Err(format!("no context in slot {slot}"))
        }
    }

    fn info(&mut self, node: u64) -> Result<wit_ctx::NodeInfo, String> {
        self.charge(1)?;
        let (ctx, local) = self.resolve(node)?;
        let (kind, len) = match ctx.node(local) {
            Some(Node::Text(t)) => (wit_ctx::NodeKind::Text, t.chars()),
            Some(Node::Sequence { items, .. }) => (wit_ctx::NodeKind::Sequence, items.len() as u64),
            Some(Node::Mapping { entries, .. }) => {
                (wit_ctx::NodeKind::Mapping, entries.len() as u64)
            }
            _ => (wit_ctx::NodeKind::Scalar, 0),
        };
        Ok(wit_ctx::NodeInfo {
            kind,
            len,
            size_chars: ctx.size_chars(local),
        })
    }

    fn child(&mut self, node: u64, index: u64) -> Result<u64, String> {
        self.charge(1)?;
        let (ctx, local) = self.resolve(node)?;
        let child = match ctx.node(local) {
            Some(Node::Sequence { items, .. }) => items.get(index as usize).copied(),
            Some(Node::Mapping { entries, .. }) => entries.get(index as usize).map(|e| e.1),
            _ => return Err(format!("context node {node} has no items")),
        };
        let child = child.ok_or_else(|| format!("index {index} out of range"))?;
        Ok((node & !0xFFFF_FFFF) | u64::from(child))
    }

    fn keys(&mut self, node: u64, start: u64, count: u32) -> Result<Vec<String>, String> {
        self.charge(1)?;
        let cap = self.cap();
        let (ctx, local) = self.resolve(node)?;
        let Some(Node::Mapping { entries, .. }) = ctx.node(local) else {
            return Err(format!("context node {node} is not a mapping"));
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (k, _) in entries.iter().skip(start as usize).take(count as usize) {
            bytes += k.len() + 8;
            if bytes > cap {
                break;
            }
            out.push(k.clone());
        }
        Ok(out)
    }

    fn lookup(&mut self, node: u64, key: String) -> Result<Option<u64>, String> {
        self.charge(1)?;
        let (ctx, local) = self.resolve(node)?;
        let Some(mapping @ Node::Mapping { .. }) = ctx.node(local) else {
            return Err(format!("context node {node} is not a mapping"));
        };
        Ok(mapping
            .lookup(&key)
            .map(|id| (node & !0xFFFF_FFFF) | u64::from(id)))
    }

    fn to_json(&mut self, node: u64) -> Result<String, String> {
        self.charge(1)?;
        let cap = self.cap();
        let (ctx, local) = self.resolve(node)?;
        ctx.to_json(local, cap).ok_or_else(|| {
            format!(
                "this part of the context is larger than the sandbox passes in one piece ({cap} \
                 bytes); index into it instead"
            )
        })
    }

    fn read(&mut self, node: u64, start: u64, end: u64) -> Result<String, String> {
        self.charge(1)?;
        let cap = self.cap();
        if end.saturating_sub(start) > cap as u64 {
            return Err(format!(
                "refused to read {} characters at once: the sandbox passes at most {cap} bytes \
                 per piece; read smaller slices",
                end - start
            ));
        }
        let text = self.text(node)?;
        let s = text.slice(start, end).to_string();
        self.bounded("this slice", s)
    }

    async fn find(
        &mut self,
        node: u64,
        needle: String,
        start: u64,
        end: u64,
        reverse: bool,
    ) -> Result<i64, String> {
        self.charge(1)?;
        self.text(node)?;
        let (ctx, local) = self.shared(node)?;
        let work = move |cancel: &AtomicBool| match ctx.node(local) {
            Some(Node::Text(t)) => t.find(&needle, start, end, reverse, cancel),
            _ => Ok(None),
        };
        let bytes = self.text_bytes(node, start, end);
        match self
            .scan("find", bytes, INLINE_SUBSTRING_BYTES, work)
            .await?
        {
            Some(Ok(at)) => Ok(at.map_or(-1, |p| p as i64)),
            Some(Err(_)) | None => Err(self.out_of_time("find()")),
        }
    }

    async fn count(
        &mut self,
        node: u64,
        needle: String,
        start: u64,
        end: u64,
    ) -> Result<u64, String> {
        self.charge(1)?;
        self.text(node)?;
        let (ctx, local) = self.shared(node)?;
        let work = move |cancel: &AtomicBool| match ctx.node(local) {
            Some(Node::Text(t)) => t.count(&needle, start, end, cancel),
            _ => Ok(0),
        };
        let bytes = self.text_bytes(node, start, end);
        match self
            .scan("count", bytes, INLINE_SUBSTRING_BYTES, work)
            .await?
        {
            Some(Ok(n)) => Ok(n),
            Some(Err(_)) | None => Err(self.out_of_time("count()")),
        }
    }

    async fn search(
        &mut self,
        node: u64,
        pattern: String,
        options: wit_ctx::SearchOptions,
    ) -> Result<Vec<wit_ctx::SearchMatch>, String> {
        self.charge(1)?;
        let pattern = self.patterns.get(&pattern, options.ignore_case)?;
        let cap = self.cap();
        let (ctx, local) = self.shared(node)?;
        let request = SearchRequest {
            max_results: options.max_results.min(self.limits.max_search_results) as usize,
            // A character is at most 4 bytes: keep any one match well inside the string cap.
            max_match_chars: u64::from(options.max_match_chars).min(cap as u64 / 8),
            max_bytes: cap,
            range: (options.start, options.end)
                .ne(&(0, u64::MAX))
                .then_some((options.start, options.end)),
        };
        let size = ctx.size_chars(local);
        let work = move |cancel: &AtomicBool| search_hits(&ctx, local, &pattern, request, cancel);
        let hits = match self
            .scan("the search", size, INLINE_REGEX_BYTES, work)
            .await?
        {
            Some(Ok(hits)) => {
                self.searches = self.searches.saturating_add(1);
                if hits.is_empty() {
                    self.empty_searches = self.empty_searches.saturating_add(1);
                }
                hits
            }
            Some(Err(Stopped::TooCostly)) => {
                return Err(
                    "search() cannot run this pattern over this text on the host: it \
                     can match across lines and uses a Unicode word boundary (\\b) over \
                     non-ASCII text. Use a pattern that cannot match a newline (no (?s), [\\s\\S] \
                     or negated class), or search a smaller part"
                        .into(),
                );
            }
            Some(Err(Stopped::Cancelled)) | None => {
                return Err(format!(
                    "search() did not finish within the step's time limit ({:.1} s); search \
                     a smaller part of the context or use a simpler pattern",
                    self.limits.step_timeout.as_secs_f64()
                ));
            }
        };
        Ok(hits
            .into_iter()
            .map(|h| wit_ctx::SearchMatch {
                path: h
                    .path
                    .into_iter()
                    .map(|p| match p {
                        PathStep::Index(i) => wit_ctx::PathStep::Index(i),
                        PathStep::Key(k) => wit_ctx::PathStep::Key(k),
                    })
                    .collect(),
                start: h.start,
                end: h.end,
                text: h.text,
                line: h.line,
            })
            .collect())
    }

    async fn spans(
        &mut self,
        node: u64,
        pattern: String,
        max: u32,
    ) -> Result<Option<Vec<u64>>, String> {
        self.charge(1)?;
        self.text(node)?;
        let pattern = self.patterns.get(&pattern, false)?;
        let max = max.min(MAX_SPANS) as usize;
        let (ctx, local) = self.shared(node)?;
        let size = ctx.size_chars(local);
        let work = move |cancel: &AtomicBool| text_spans(&ctx, local, &pattern, max, cancel);
        match self
            .scan("the sweep", size, INLINE_REGEX_BYTES, work)
            .await?
        {
            Some(Ok(spans)) => Ok(spans),
            // The guest's CPython runs it instead, on the guest's fuel.
            Some(Err(Stopped::TooCostly)) => Ok(None),
            Some(Err(Stopped::Cancelled)) | None => Err(self.out_of_time("the sweep")),
        }
    }

    async fn alphabet(&mut self, node: u64) -> Result<Option<String>, String> {
        self.charge(1)?;
        self.text(node)?;
        let (ctx, local) = self.shared(node)?;
        // The first call reads the whole text once: off the async workers.
        let work = move |cancel: &AtomicBool| match ctx.node(local) {
            Some(Node::Text(text)) => text.alphabet_within(cancel).map(|a| a.map(str::to_string)),
            _ => Ok(None),
        };
        match self
            .off_the_workers("reading the text's characters", work)
            .await?
        {
            Some(Ok(alphabet)) => Ok(alphabet),
            Some(Err(_)) | None => Err(self.out_of_time("reading the text's characters")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_patterns_are_remembered_and_kept_patterns_are_charged_to_the_pool() {
        let pool = MemoryPool::new(1 << 30);
        let mut cache = PatternCache::new(pool.clone());
        for _ in 0..3 {
            assert!(cache.get("(unclosed", false).is_err());
            assert!(cache.get(r"\w+ \d{1,3}", true).is_ok());
        }
        assert_eq!(cache.compiles, 2, "each pattern is compiled once");
        assert_eq!(pool.used(), cache.bytes() as u64);
        assert!(pool.used() > 0);
        // More than the entries allowed: the oldest go, and their memory goes back.
        for i in 0..PATTERN_CACHE_ENTRIES + 5 {
            cache.get(&format!("word{i}"), false).unwrap();
        }
        assert_eq!(cache.entries.len(), PATTERN_CACHE_ENTRIES);
        assert_eq!(pool.used(), cache.bytes() as u64);
        drop(cache);
        assert_eq!(pool.used(), 0);
    }

    #[test]
    fn a_pattern_the_pool_cannot_hold_is_refused() {
        let pool = MemoryPool::new(64 << 10);
        let mut cache = PatternCache::new(pool.clone());
        let e = cache.get(r"\w{50}\s+\p{Greek}{20}", false).unwrap_err();
        assert!(e.contains("memory budget"), "{e}");
        assert_eq!(pool.used(), 0);
        assert!(cache.get("a", false).is_ok());
    }
}
