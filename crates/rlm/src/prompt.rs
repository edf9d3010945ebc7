//! What the root model is told: the system prompt, the first user turn, nudges.

use rlm_sandbox::{ContextShape, Tool};

/// Which system prompt to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptProfile {
    /// For capable (hosted) models: the full description of the REPL and its tools.
    #[default]
    Standard,
    /// For small local models: short, strict, with a worked example to imitate.
    Small,
    /// Chosen by the root model: see [`PromptProfile::for_model`]. The default of
    /// [`Rlm::builder`](crate::Rlm::builder); a run records the profile it chose.
    Auto,
}

impl PromptProfile {
    /// The profile [`PromptProfile::Auto`] chooses for a root model id, on any provider:
    /// `Small` for local models (`local/...`) and for ids that name a size under 10 billion
    /// parameters (`compat/qwen2.5-coder-1.5b`, `compat/llama3.1:8b`,
    /// `compat/Qwen/Qwen2.5-7B-Instruct`), `Standard` for every other model.
    ///
    /// ```
    /// use rlm::PromptProfile;
    /// assert_eq!(PromptProfile::for_model("compat/qwen2.5-coder-1.5b"), PromptProfile::Small);
    /// assert_eq!(PromptProfile::for_model("compat/llama-3.3-70b"), PromptProfile::Standard);
    /// assert_eq!(PromptProfile::for_model("openai/gpt-5-mini"), PromptProfile::Standard);
    /// ```
    pub fn for_model(id: &str) -> Self {
        static SIZE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
        let size = SIZE.get_or_init(|| {
            regex::Regex::new(r"(?i)(?:^|[^a-z0-9.])(\d+(?:\.\d+)?)b(?:$|[^a-z0-9])")
                .expect("model size pattern is valid")
        });
        if id.starts_with("local/") {
            return Self::Small;
        }
        let billions = size
            .captures_iter(id)
            .filter_map(|c| c[1].parse::<f64>().ok())
            .next();
        match billions {
            Some(b) if b < SMALL_MODEL_BILLIONS => Self::Small,
            _ => Self::Standard,
        }
    }

    /// This profile for a run whose root model is `model_id` (`Auto` chosen, the others as
    /// they are).
    pub fn resolve(self, model_id: &str) -> Self {
        match self {
            Self::Auto => Self::for_model(model_id),
            other => other,
        }
    }

    /// Its name, as `--prompt-profile` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Small => "small",
            Self::Auto => "auto",
        }
    }
}

/// Models with fewer parameters than this many billions get the small profile by default.
const SMALL_MODEL_BILLIONS: f64 = 10.0;

impl std::fmt::Display for PromptProfile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A prompt profile name that is not `auto`, `standard` or `small`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown prompt profile {0:?}: use auto, standard or small")]
pub struct UnknownProfile(pub String);

impl std::str::FromStr for PromptProfile {
    type Err = UnknownProfile;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "standard" => Ok(Self::Standard),
            "small" => Ok(Self::Small),
            _ => Err(UnknownProfile(s.to_string())),
        }
    }
}

/// Facts the system prompt states about the run.
#[derive(Debug, Clone)]
pub struct PromptFacts {
    /// Shape of `context`.
    pub shape: ContextShape,
    /// Names of later contexts (`context_1`, ...), with their shapes.
    pub extra_contexts: Vec<(String, ContextShape)>,
    /// Names of the contexts too large for the REPL's memory, served lazily by the host (the
    /// others are real Python objects).
    pub lazy_contexts: Vec<String>,
    /// Characters a sub-model can read in one call (about 4 per token of its window).
    pub sub_model_chars: u64,
    /// Whether `llm_query`/`llm_batch` work (false at `max_depth` 0).
    pub sub_calls: bool,
    /// Whether `rlm_query` starts a recursive RLM (false: it is a plain sub-call).
    pub recursive: bool,
    /// Characters of each step's output the model sees.
    pub max_output_chars: usize,
    /// Iterations allowed.
    pub max_iterations: u32,
    /// The custom tools model code can call.
    pub tools: Vec<Tool>,
}

/// Describe a context's shape in one line, abbreviating long lists.
pub fn describe_shape(shape: &ContextShape) -> String {
    match shape {
        ContextShape::Text { chars } => format!("a str of {chars} characters"),
        ContextShape::List { item_chars } => {
            let total: u64 = item_chars.iter().sum();
            let shown: Vec<String> = if item_chars.len() <= 12 {
                item_chars.iter().map(u64::to_string).collect()
            } else {
                let mut v: Vec<String> = item_chars[..6].iter().map(u64::to_string).collect();
                v.push(format!("... ({} more) ...", item_chars.len() - 9));
                v.extend(
                    item_chars[item_chars.len() - 3..]
                        .iter()
                        .map(u64::to_string),
                );
                v
            };
            format!(
                "a list of {} documents, {total} characters in all (lengths: {})",
                item_chars.len(),
                shown.join(", ")
            )
        }
        ContextShape::Object { keys } => format!("a dict (parsed JSON) with {keys} keys"),
        ContextShape::Scalar => "a JSON scalar".to_string(),
    }
}

/// The system prompt of a profile.
pub fn system_prompt_for(profile: PromptProfile, f: &PromptFacts) -> String {
    match profile {
        PromptProfile::Standard | PromptProfile::Auto => system_prompt(f),
        PromptProfile::Small => small_system_prompt(f),
    }
}

/// The small-model profile: one format, the whole method in a worked example (search, look at
/// short matches with a count, follow what was found to the next search, read pieces with
/// `llm_query` when sub-calls are on, finish with `FINAL`). Small models (0.5B–1.5B) guess or
/// loop with instructions alone; imitating an example they can do.
pub fn small_system_prompt(f: &PromptFacts) -> String {
    let helper = if f.sub_calls {
        "llm_query(prompt) asks a helper model about text you give it and returns its answer as \
         a str: use it to read or classify pieces you found, e.g. \
         print(llm_query(\"Which date is the visit? \" + h[\"line\"])). llm_batch(prompts) \
         asks about many pieces at once and returns the answers as a list.\n"
    } else {
        ""
    };
    // When what the question asks about is not written word for word (a kind, a mood, a
    // topic), searching for the word finds nothing: the pieces must be read.
    let classify = match (f.sub_calls, pieces_expr(&f.shape)) {
        (true, Some(items)) => format!(
            "Example (what is counted is not written in the text, so each piece is read).\n\
             Question: How many reviews are complaints?\nYou reply:\n```repl\n\
             items = {items}\n\
             labels = llm_batch([\"Is this review a complaint? Answer yes or no.\\n\" + x for x in items])\n\
             print(len(items), \"items,\", sum(\"yes\" in a.lower() for a in labels), \"yes\")\n```\n\
             The output is:\n120 items, 31 yes\nYou reply:\nFINAL(31)\n\n"
        ),
        _ => String::new(),
    };
    format!(
        "You answer questions about a document. The document is in a Python variable named \
         `context` ({}). You cannot read it directly: you run Python code to look inside it.\n\n\
         Each turn, reply with exactly ONE code block like this:\n{}\
         search(pattern) finds a regular expression in the document (ignoring case unless the \
         pattern has a capital letter) and returns the matches; each has \"text\" (what matched) \
         and \"snippet\" (the words around it). Print how many matches there are and the \
         different snippets, never the whole document.\n{helper}\
         When the printed output shows the answer, reply with FINAL(the answer) and no code.\n\n\
         Example (the answer takes two searches).\n\
         Question: What is the blood type of Tom Reyes's mother?\n\
         You reply (first search the most specific name in the question):\n{}\
         The output is:\n1 matches\nTom Reyes (born 1990), son of Rosa Diaz, works as a nurse\n\
         You reply (the next search uses the name just found):\n{}\
         The output is:\n2 matches\nTom Reyes (born 1990), son of Rosa Diaz, works as a nurse\n\
         Rosa Diaz: blood type A-, no known allergies\nYou reply:\nFINAL(A-)\n\n\
         {classify}\
         Rules: search first for the most specific name, code or number in the question, then \
         for the names the output gives; general words (like \"mother\" above) are often \
         written differently in the text; if nothing is found, try a shorter or different word; when a match names \
         something the question depends on, search for that next; do not repeat a search you \
         already ran; keep answers short; you have at most {} replies.",
        describe_shape(&f.shape),
        small_search_block("keyword"),
        small_search_block("Tom Reyes"),
        small_search_block("Rosa Diaz"),
        f.max_iterations
    ) + &small_tools(&f.tools)
}

/// The custom tools for the small profile: one line each.
fn small_tools(tools: &[Tool]) -> String {
    if tools.is_empty() {
        return String::new();
    }
    let mut p = String::from("\n\nYou can also call these Python functions in your code:\n");
    for t in tools {
        p.push_str(&format!(
            "{}: {}\n",
            t.signature(),
            one_line(t.description())
        ));
    }
    p
}

/// The custom tools for the standard profile: signature, description and each parameter.
fn tools_section(tools: &[Tool]) -> String {
    if tools.is_empty() {
        return String::new();
    }
    let mut p = String::from(
        "Custom tools (call them like Python functions, with positional or keyword arguments; \
         arguments and results are JSON values such as str, int, float, bool, None, list and \
         dict; a failed call raises ToolError):\n",
    );
    for t in tools {
        p.push_str(&format!(
            "- {}: {}\n",
            t.signature(),
            one_line(t.description())
        ));
        let props = t.parameters().get("properties");
        for name in t.params() {
            let spec = props.and_then(|ps| ps.get(name));
            let ty = spec.and_then(|s| s.get("type")).map(|ty| match ty {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            });
            let doc = spec
                .and_then(|s| s.get("description"))
                .and_then(|d| d.as_str())
                .map(one_line);
            let mut line = format!("    {name}");
            if let Some(ty) = ty {
                line.push_str(&format!(" ({ty})"));
            }
            if let Some(doc) = doc {
                line.push_str(&format!(": {doc}"));
            }
            p.push_str(&line);
            p.push('\n');
        }
    }
    p
}

/// Text on one line (newlines and runs of spaces folded).
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The small profile's search step: the match count and the distinct snippets around the
/// matches (many matches are often one repeated line).
fn small_search_block(keyword: &str) -> String {
    format!(
        "```repl\nhits = search(r\"{keyword}\")\nprint(len(hits), \"matches\")\n\
         for s in list(dict.fromkeys(h[\"snippet\"] for h in hits))[:6]:\n    print(s)\n```\n"
    )
}

/// The system prompt for the root model (the normal profile, for capable models).
pub fn system_prompt(f: &PromptFacts) -> String {
    let mut p = String::new();
    p.push_str(
        "You answer a question about a document that is too large to read at once. The document \
         is not in this conversation: it is loaded in a persistent Python REPL as the variable \
         `context`. You work by writing Python that the REPL runs; you see each block's output \
         and then decide what to do next.\n\n",
    );
    let describe = |name: &str, shape: &ContextShape| {
        let d = describe_shape(shape);
        if f.lazy_contexts.iter().any(|n| n == name) {
            d.replacen("a str of", "a text of", 1)
        } else {
            d
        }
    };
    p.push_str(&format!(
        "`context` is {}.\n",
        describe("context", &f.shape)
    ));
    for (name, shape) in &f.extra_contexts {
        p.push_str(&format!("`{name}` is {}.\n", describe(name, shape)));
    }
    if f.lazy_contexts.is_empty() {
        p.push_str(
            "It is a real Python object: use it as you would any str, list or dict (re, split, \
             slicing, len). Offsets and lengths are in characters.\n\n",
        );
    } else {
        p.push_str(&format!(
            "{} too large for the REPL's memory, so it is a lazy object served from outside \
             Python, not a str: len, slicing (a slice is a real str), find, count, startswith, \
             `in`, splitlines() and split() (produced on demand), iter_lines(), chunks(size) and \
             re.search/findall/finditer work on it; methods that would copy the whole text \
             (lower, replace, re.sub, ...) work on slices. Offsets and lengths are in \
             characters.\n\n",
            f.lazy_contexts
                .iter()
                .map(|n| format!("`{n}` is"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    p.push_str("Available in the REPL:\n");
    p.push_str(
        "- search(pattern, max=100, ignore_case=None): a fast regular-expression search over the \
         whole context, run outside Python; it ignores case unless the pattern has a capital \
         letter. Returns dicts with 'start', 'end', 'text', 'line', 'snippet' (the words around \
         the match) and 'path' (index of the document in a list). Use it first to find where things are.\n",
    );
    if f.sub_calls {
        p.push_str(&format!(
            "- llm_query(prompt): ask a language model a question about text you pass in the \
             prompt; it returns a str. It can read about {} characters per call, so pass chunks \
             and ask precise questions.\n\
             - llm_batch(prompts): many llm_query calls at once, run concurrently; returns the \
             answers in order. Prefer it to a loop of llm_query calls.\n",
            f.sub_model_chars
        ));
        if f.recursive {
            p.push_str(
                "- rlm_query(prompt): hand a sub-task to another agent like you, with its own REPL; \
                 it returns its final answer.\n",
            );
        } else {
            p.push_str("- rlm_query(prompt): same as llm_query here.\n");
        }
        p.push_str("A failed call returns a str starting with \"Error:\" instead of raising.\n");
    } else {
        p.push_str(
            "- llm_query/llm_batch/rlm_query are disabled in this run: work with search and plain \
             Python.\n",
        );
    }
    p.push_str(
        "- SHOW_VARS(): returns a listing of the variables you have defined (print it).\n\
         The standard library is there (re, json, collections, math, statistics, datetime, ...); \
         files, network and other packages are not.\n",
    );
    p.push_str(&tools_section(&f.tools));
    p.push('\n');
    p.push_str(&format!(
        "How to work:\n\
         1. Put code in fenced blocks tagged repl:\n```repl\nhits = search(r\"keyword\")\nprint(len(hits), hits[:3])\n```\n\
         2. You only see the first and last part of each output (about {} characters): print \
         summaries, counts and short excerpts, not whole documents. Keep results in variables.\n\
         3. Look before you conclude: inspect the context, narrow down with search and slicing, \
         and use sub-calls to read or classify pieces when there is too much to read yourself.\n\
         4. When you know the answer, finish with FINAL(your answer) in your reply, or \
         FINAL_VAR(variable_name) to return a variable you computed. (In code, FINAL(x), \
         FINAL_VAR(\"name\") or setting answer = {{\"content\": x, \"ready\": True}} also finish.)\n\
         You have at most {} replies. Answer the question asked, directly and completely.\n",
        f.max_output_chars, f.max_iterations
    ));
    p
}

/// The first user turn: the question.
pub fn first_user_message(query: &str) -> String {
    format!(
        "Question: {query}\n\nThe document is in `context` (the question is also in `query`); you \
         have not looked at it yet. Start by exploring it with code in a ```repl block."
    )
}

/// What the model is shown for a step that printed nothing. Small models get a hint: they
/// otherwise tend to answer "no output" after a search that found nothing.
pub fn no_output(profile: PromptProfile) -> &'static str {
    match profile {
        PromptProfile::Standard | PromptProfile::Auto => "(no output)",
        PromptProfile::Small => {
            "(no output)\nNothing was printed. If a search found nothing, search again for a \
             shorter or different word from the question."
        }
    }
}

/// Sent when a reply has neither code nor a final answer.
pub const NUDGE: &str = "Your reply had no ```repl code block and no FINAL(...). Either run code \
in a ```repl block to keep working on the question, or give your answer as FINAL(answer).";

/// Sent once when the iterations are used up: the question again and the most recent output
/// that printed something, so the answer is taken from that evidence rather than guessed.
pub fn last_call(iterations: u32, query: &str, evidence: Option<&str>) -> String {
    let mut s = format!(
        "You have used all {iterations} replies. Give your best final answer now from what you have \
         found, as FINAL(answer). Do not write more code.\n\nThe question: {query}"
    );
    if let Some(e) = evidence {
        s.push_str("\n\nThe last output that printed something:\n");
        s.push_str(&truncate_middle(e, LAST_CALL_EVIDENCE_CHARS));
        s.push_str("\n\nAnswer with what this output says, in the form the question asks for.");
    }
    s
}

/// Most characters of evidence repeated in the last call.
const LAST_CALL_EVIDENCE_CHARS: usize = 2_000;

/// After a step that printed something: the question again (as the official RLM restates it
/// every turn) and how to finish, or to take the next hop when the output is only a step on the
/// way (small models answer a two-hop question with the first hop's result).
pub fn finish_hint(query: &str) -> String {
    format!(
        "The question: {query}\nDoes this output state the answer itself, of the kind the \
         question asks for? If so, reply with FINAL(...) holding that answer. If it only names \
         something the answer depends on (a person, a company, a place, an id: a step on the \
         way), search for that name next; otherwise keep going."
    )
}

/// The system prompt of the reader: a small model's answer that no output showed is read again
/// from the latest output, in a conversation without the worked examples it copies from.
pub const READER_SYSTEM: &str = "You answer a question from a piece of text. Answer in a few \
words taken from the text. Do not add anything the text does not say.";

/// The reader's question: the latest output and the question.
pub fn reader_question(evidence: &str, query: &str) -> String {
    format!(
        "Text:\n{}\n\nQuestion: {query}\nAnswer:",
        truncate_middle(evidence, LAST_CALL_EVIDENCE_CHARS)
    )
}

/// After a final answer written in a reply that no output of the run showed (a small model's
/// copy of a literal from its prompt's example, or of the question's own words): the question
/// and the latest output again, once.
pub fn ungrounded_final(answer: &str, query: &str, evidence: Option<&str>) -> String {
    let shown: String = answer.chars().take(200).collect();
    let mut s = format!("Your answer {shown:?} is not in any output your code printed.\n");
    match evidence {
        Some(out) => s.push_str(&format!("The last output was:\n{out}\n")),
        None => s.push_str("Nothing has been printed yet: search the document first.\n"),
    }
    s.push_str(&format!(
        "The question: {query}\nIf the output shows the answer, reply with FINAL(...) holding \
         it in the output's own words. If it does not, search again."
    ));
    s
}

/// Lines of the document with the question's words, shown to a small model after its
/// searches found nothing (see `lookup.rs`).
pub fn lines_with_words(words: &[String], lines: &[String], query: &str) -> String {
    let mut s = format!(
        "Lines of the document that hold the words {}:\n",
        words
            .iter()
            .map(|w| format!("{w:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for line in lines {
        let line: String = line.chars().take(600).collect();
        s.push_str(&format!("- {line}\n"));
    }
    s.push_str(&format!(
        "The question: {query}\nIf one of these lines states the answer, reply with FINAL(...) \
         holding it in the line's own words; otherwise search for a word from these lines."
    ));
    s
}

/// Instead of [`finish_hint`] after a reply whose searches all matched nothing. With sub-calls
/// on, it shows the code that reads every piece instead (small models copy the code they saw
/// last, and keep searching for a word that is never written).
pub fn nothing_found(sub_calls: bool, shape: &ContextShape) -> String {
    let mut s = String::from(
        "Every search in this step matched nothing. That rarely means the answer is not in the \
         context: the text may say it in other words (another form of the word, e.g. a shorter \
         stem, a synonym, different spacing or punctuation). Try broader patterns or other \
         words, or read a part of the context, before you answer.",
    );
    if let (true, Some(items)) = (sub_calls, pieces_expr(shape)) {
        // `query` is the question, bound in the REPL: the code works as written, so a model
        // that copies it word for word still asks the right thing of every piece.
        s.push_str(&format!(
            " If what the question asks about is not written word for word (a kind, a topic, a \
             mood), ask the helper model the question about each piece instead, e.g.:\n\
             ```repl\npieces = {items}\n\
             answers = llm_batch([\"Question: \" + query + \"\\nAnswer it from this text alone, in a \
             few words. If the text says nothing about it, answer: none.\\nText: \" + x for x in pieces])\n\
             found = [(i, a) for i, a in enumerate(answers) if \"none\" not in a.lower()]\n\
             print(len(pieces), \"pieces,\", len(found), \"with an answer:\", found[:20])\n```"
        ));
    }
    s
}

/// A Python expression for the pieces of `context` as a list of str, by its shape (lines of a
/// text, the documents of a list, the entries of an object).
fn pieces_expr(shape: &ContextShape) -> Option<&'static str> {
    match shape {
        ContextShape::Text { .. } => Some("[x for x in context.splitlines() if x.strip()]"),
        ContextShape::List { .. } => Some("[str(x) for x in context]"),
        ContextShape::Object { .. } => Some("[f\"{k}: {v}\" for k, v in context.items()]"),
        ContextShape::Scalar => None,
    }
}

/// Sent when a block ran the same code as an earlier one and printed the same output. When its
/// searches matched nothing, it does not invite an answer from that output ("0 matches" is
/// rarely the answer): [`nothing_found`] follows with what to do instead, and the model may
/// still end by saying the context does not hold the answer.
pub fn repeated_step(first_iteration: u32, times: u32, query: &str, found_nothing: bool) -> String {
    let next = if found_nothing {
        "It matched nothing again, so do not run it again: search with other words or read \
         the pieces, as below. Only if you are sure the context does not hold the answer, reply \
         with FINAL(...) saying so."
    } else {
        "Use what it printed: if it answers the question, reply with FINAL(...) holding that \
         answer. Otherwise do something different: another pattern or word, another part of the \
         context, or llm_query on the text found."
    };
    format!(
        "Note: this block is the same code as in reply {first_iteration} and printed the same \
         output ({times} times now). Running it again will not change anything. {next}\n\
         The question: {query}"
    )
}

/// Sent when a final answer is the prompt's placeholder copied as it is.
pub fn placeholder_final(answer: &str) -> String {
    format!(
        "FINAL({answer}) is not an answer: put the answer itself between the parentheses, as the \
         output shows it (for example FINAL(A-) when the output says \"blood type A-\")."
    )
}

/// Sent when a whole reply repeats an earlier one word for word.
pub fn repeated_reply(first_iteration: u32) -> String {
    format!(
        "Note: this reply is word for word the same as your reply {first_iteration}, so it can only \
         lead to the same result. Write something different, or give FINAL(...) with the answer."
    )
}

/// Cut `text` to at most `max` characters, keeping its head and tail, with a marker saying how
/// much was cut.
pub fn truncate_middle(text: &str, max: usize) -> String {
    let n = text.chars().count();
    if n <= max {
        return text.to_string();
    }
    let head = max * 2 / 3;
    let tail = max - head;
    let start: String = text.chars().take(head).collect();
    let end: String = text.chars().skip(n - tail).collect();
    format!(
        "{start}\n... [{} characters cut] ...\n{end}",
        n - head - tail
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_profile_follows_the_model_size_on_any_provider() {
        for (id, want) in [
            ("local/qwen2.5-coder-0.5b", PromptProfile::Small),
            ("local//models/custom.gguf", PromptProfile::Small),
            ("compat/qwen2.5-coder-1.5b", PromptProfile::Small),
            (
                "compat/qwen2.5-coder:1.5b-instruct-q4_K_M",
                PromptProfile::Small,
            ),
            ("compat/llama3.1:8b", PromptProfile::Small),
            ("compat/Qwen/Qwen2.5-7B-Instruct", PromptProfile::Small),
            ("openai/gpt-oss-20b", PromptProfile::Standard),
            ("compat/llama-3.3-70b-instruct", PromptProfile::Standard),
            ("compat/qwen3-30b-a3b", PromptProfile::Standard),
            ("openai/gpt-5-mini", PromptProfile::Standard),
            ("anthropic/claude-sonnet-4-5", PromptProfile::Standard),
            ("gemini/gemini-2.5-flash", PromptProfile::Standard),
            ("compat/scripted", PromptProfile::Standard),
        ] {
            assert_eq!(PromptProfile::for_model(id), want, "{id}");
            assert_eq!(PromptProfile::Auto.resolve(id), want, "{id}");
            assert_eq!(PromptProfile::Standard.resolve(id), PromptProfile::Standard);
            assert_eq!(PromptProfile::Small.resolve(id), PromptProfile::Small);
        }
        for p in [
            PromptProfile::Auto,
            PromptProfile::Standard,
            PromptProfile::Small,
        ] {
            assert_eq!(p.to_string().parse::<PromptProfile>(), Ok(p));
        }
        assert!("tiny".parse::<PromptProfile>().is_err());
    }

    #[test]
    fn the_prompt_says_whether_the_context_is_a_real_str_or_lazy() {
        let mut f = PromptFacts {
            shape: ContextShape::Text { chars: 9_000_000 },
            extra_contexts: Vec::new(),
            lazy_contexts: Vec::new(),
            sub_model_chars: 100_000,
            sub_calls: true,
            recursive: false,
            max_output_chars: 10_000,
            max_iterations: 20,
            tools: Vec::new(),
        };
        let real = system_prompt(&f);
        assert!(
            real.contains("`context` is a str of 9000000 characters"),
            "{real}"
        );
        assert!(real.contains("It is a real Python object"), "{real}");
        assert!(!real.contains("lazy"), "{real}");
        f.lazy_contexts = vec!["context".into()];
        let lazy = system_prompt(&f);
        assert!(
            lazy.contains("`context` is a text of 9000000 characters"),
            "{lazy}"
        );
        assert!(
            lazy.contains("`context` is too large for the REPL's memory"),
            "{lazy}"
        );
        assert!(
            lazy.contains("re.search/findall/finditer work on it"),
            "{lazy}"
        );
    }

    /// The small profile teaches the whole method: counts and short snippets, a second search
    /// that follows what the first found, and sub-calls only where they work.
    #[test]
    fn the_small_prompt_teaches_more_than_one_hop_and_sub_calls_when_on() {
        let mut f = PromptFacts {
            shape: ContextShape::Text { chars: 50_000 },
            extra_contexts: Vec::new(),
            lazy_contexts: Vec::new(),
            sub_model_chars: 24_000,
            sub_calls: true,
            recursive: false,
            max_output_chars: 1_500,
            max_iterations: 8,
            tools: Vec::new(),
        };
        let p = small_system_prompt(&f);
        assert!(p.contains("llm_query(prompt)"), "{p}");
        assert!(p.contains("h[\"snippet\"] for h in hits"), "{p}");
        assert_eq!(p.matches("search(r\"").count(), 3, "{p}");
        assert!(p.contains("at most 8 replies"), "{p}");
        assert!(p.contains("labels = llm_batch(["), "{p}");
        f.sub_calls = false;
        let p = small_system_prompt(&f);
        assert!(!p.contains("llm_query") && !p.contains("llm_batch"), "{p}");
    }

    #[test]
    fn lists_are_abbreviated() {
        let shape = ContextShape::List {
            item_chars: (1..=20).collect(),
        };
        let d = describe_shape(&shape);
        assert!(
            d.starts_with("a list of 20 documents, 210 characters in all"),
            "{d}"
        );
        assert!(
            d.contains("1, 2, 3, 4, 5, 6, ... (11 more) ..., 18, 19, 20"),
            "{d}"
        );
    }

    #[test]
    fn truncation_keeps_head_and_tail() {
        let t = truncate_middle(&"a".repeat(100).replace("aaaa", "abcd"), 30);
        assert!(t.contains("[70 characters cut]"), "{t}");
        assert_eq!(truncate_middle("short", 30), "short");
    }
}
