//! The `context` interface: reads and regex searches of the contexts, which stay on the host.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::HostState;
use crate::bindings::rlm::sandbox::context as wit_ctx;
use crate::context::{Context, LocalId, Node, PathStep, build_regex, search_hits};

/// Most match spans one `spans` call returns (1.6 MB here, about 6 MB of Python ints in the
/// guest).
const MAX_SPANS: u32 = 100_001;
/// Number of compiled search patterns kept per REPL.
const REGEX_CACHE: usize = 8;

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
            let cancel = Arc::new(AtomicBool::new(false));
            let flag = cancel.clone();
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
                Err(_) => {
                    cancel.store(true, Ordering::Relaxed);
                    Ok(None)
                }
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

    fn regex(&mut self, pattern: &str, ignore_case: bool) -> Result<regex::Regex, String> {
        let key = (pattern.to_string(), ignore_case);
        if let Some((_, re)) = self.regexes.iter().find(|(k, _)| *k == key) {
            return Ok(re.clone());
        }
        let re = build_regex(pattern, ignore_case)?;
        if self.regexes.len() >= REGEX_CACHE {
            self.regexes.pop_front();
        }
        self.regexes.push_back((key, re.clone()));
        Ok(re)
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
        let Some(Node::Mapping { entries, .. }) = ctx.node(local) else {
            return Err(format!("context node {node} is not a mapping"));
        };
        Ok(entries
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, id)| (node & !0xFFFF_FFFF) | u64::from(*id)))
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

    fn find(
        &mut self,
        node: u64,
        needle: String,
        start: u64,
        end: u64,
        reverse: bool,
    ) -> Result<i64, String> {
        self.charge(1)?;
        let text = self.text(node)?;
        Ok(text
            .find(&needle, start, end, reverse)
            .map_or(-1, |p| p as i64))
    }

    fn count(&mut self, node: u64, needle: String, start: u64, end: u64) -> Result<u64, String> {
        self.charge(1)?;
        Ok(self.text(node)?.count(&needle, start, end))
    }

    async fn search(
        &mut self,
        node: u64,
        pattern: String,
        options: wit_ctx::SearchOptions,
    ) -> Result<Vec<wit_ctx::SearchMatch>, String> {
        self.charge(1)?;
        let re = self.regex(&pattern, options.ignore_case)?;
        let max = options.max_results.min(self.limits.max_search_results) as usize;
        let cap = self.cap();
        let (ctx, local) = self.shared(node)?;
        // A character is at most 4 bytes: keep any one match well inside the string cap.
        let max_chars = u64::from(options.max_match_chars).min(cap as u64 / 8);
        let work =
            move |cancel: &AtomicBool| search_hits(&ctx, local, &re, max, max_chars, cap, cancel);
        let hits = match self.off_the_workers("the search", work).await? {
            Some(hits) => {
                self.searches = self.searches.saturating_add(1);
                if hits.is_empty() {
                    self.empty_searches = self.empty_searches.saturating_add(1);
                }
                hits
            }
            None => {
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
        let re = self.regex(&pattern, false)?;
        let max = max.min(MAX_SPANS) as usize;
        let (ctx, local) = self.shared(node)?;
        let work =
            move |cancel: &AtomicBool| crate::context::text_spans(&ctx, local, &re, max, cancel);
        match self.off_the_workers("the sweep", work).await? {
            Some(spans) => Ok(spans),
            None => Err("the sweep did not finish within the step's time limit".into()),
        }
    }

    async fn alphabet(&mut self, node: u64) -> Result<Option<String>, String> {
        self.charge(1)?;
        self.text(node)?;
        let (ctx, local) = self.shared(node)?;
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        // The first call reads the whole text once: off the async workers.
        let work = tokio::task::spawn_blocking(move || match ctx.node(local) {
            Some(Node::Text(text)) => text.alphabet().map(str::to_string),
            _ => None,
        });
        match tokio::time::timeout(remaining, work).await {
            Ok(Ok(alphabet)) => Ok(alphabet),
            Ok(Err(e)) => Err(format!(
                "reading the text's characters failed on the host: {e}"
            )),
            Err(_) => Err("reading the text's characters did not finish in time".into()),
        }
    }
}
