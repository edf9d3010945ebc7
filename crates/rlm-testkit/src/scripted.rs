//! A deterministic scripted model for testing the harness without a hosted model.
//!
//! [`respond`] plays every role a model has in an evaluation: the RLM's root model (it writes
//! the Python a competent model would write for each task family, adapted to what the run
//! allows: plain Python at depth 0, `llm_batch` at depth 1, `rlm_query` sub-agents at depth 2),
//! the sub-model (it answers classification and reading questions by reading the text it is
//! given), the `direct` baseline (it answers from whatever part of the context fits in its
//! prompt) and the judge. It sees only the conversation, exactly as a served model would;
//! `rlm-mock` serves it over the providers' HTTP wire formats.

use std::sync::LazyLock;

use regex::Regex;

use rlm_eval::datasets::TICKET_KINDS;
use rlm_eval::method::{DIRECT_SYSTEM, JUDGE_PREFIX};
use rlm_eval::normalize;

/// The kind of problem a ticket's text describes (`billing`, `technical`, `shipping`,
/// `account` or `warranty`), by the generator's phrases; `None` for other text. This is the
/// reading a capable model does when a sub-call asks it to classify a ticket.
pub fn ticket_kind(text: &str) -> Option<&'static str> {
    TICKET_KINDS
        .iter()
        .find(|(_, phrases)| phrases.iter().any(|p| text.contains(p)))
        .map(|(kind, _)| *kind)
}

/// The reply of the scripted model to a conversation of `(role, text)` pairs.
pub fn respond(messages: &[(String, String)]) -> String {
    let system = messages
        .iter()
        .find(|(r, _)| r == "system")
        .map_or("", |(_, t)| t.as_str());
    let last_user = messages
        .iter()
        .rev()
        .find(|(r, _)| r == "user")
        .map_or("", |(_, t)| t.as_str());
    if system.contains("persistent Python REPL") {
        root(messages, system)
    } else if system == DIRECT_SYSTEM {
        direct(last_user)
    } else if let Some(rest) = last_user.strip_prefix(JUDGE_PREFIX) {
        judge(rest)
    } else {
        sub_call(last_user)
    }
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| panic!("scripted model regex {pattern:?}: {e}"))
}

static SNIAH_Q: LazyLock<Regex> =
    LazyLock::new(|| re(r"What is the access code for project ([A-Za-z]+-\d+)\?"));
static OOLONG_Q: LazyLock<Regex> =
    LazyLock::new(|| re(r"How many tickets are about a ([a-z]+) problem"));
static PAIRS_Q: LazyLock<Regex> = LazyLock::new(|| re(r"warranty claim in month 2024-(\d\d)"));
static HOP_Q: LazyLock<Regex> = LazyLock::new(|| {
    re(r"In which country is the headquarters of the company that (.+) works for\?")
});
static FACTS: LazyLock<Regex> =
    LazyLock::new(|| re(r"It can read about (\d+) characters per call"));

/// The task a question (or a sub-agent's task text) asks for.
#[derive(Debug, PartialEq)]
enum Ask {
    Needle(String),
    Count(String),
    Pairs(String),
    Hops(String),
    ClassifyTickets,
    Unknown,
}

fn ask_of(question: &str) -> Ask {
    if let Some(c) = SNIAH_Q.captures(question) {
        Ask::Needle(c[1].to_string())
    } else if let Some(c) = OOLONG_Q.captures(question) {
        Ask::Count(c[1].to_string())
    } else if let Some(c) = PAIRS_Q.captures(question) {
        Ask::Pairs(c[1].to_string())
    } else if let Some(c) = HOP_Q.captures(question) {
        Ask::Hops(c[1].to_string())
    } else if question.contains(CHILD_TASK) {
        Ask::ClassifyTickets
    } else {
        Ask::Unknown
    }
}

/// What the run lets the REPL do, read from the system prompt.
struct Powers {
    sub_calls: bool,
    recursive: bool,
    chunk_chars: u64,
}

fn powers(system: &str) -> Powers {
    let sub_chars = FACTS
        .captures(system)
        .and_then(|c| c[1].parse::<u64>().ok())
        .unwrap_or(20_000);
    Powers {
        sub_calls: !system.contains("are disabled in this run"),
        recursive: system.contains("hand a sub-task to another agent"),
        // Leave room for the instruction and the reply.
        chunk_chars: (sub_chars * 7 / 10).max(500),
    }
}

/// The first line of a child RLM's context when the root hands it tickets to classify.
const CHILD_TASK: &str = "TASK: classify tickets";

const CLASSIFY: &str = "Classify each ticket below by the kind of problem its text describes: \
billing, technical, shipping, account or warranty. Reply with one line per ticket, as <ticket \
number>: <kind>.\n\n";

const HELPERS: &str = r#"import re, collections
def _lines(text):
    return list(text.iter_lines()) if hasattr(text, "iter_lines") else text.splitlines()
def _chunks(lines, size):
    out, cur, n = [], [], 0
    for l in lines:
        if cur and n + len(l) + 1 > size:
            out.append("\n".join(cur))
            cur, n = [], 0
        cur.append(l)
        n += len(l) + 1
    if cur:
        out.append("\n".join(cur))
    return out
def _labels(answers):
    labels = {}
    for a in answers:
        for m in re.finditer(r"(\d+):\s*([a-z]+)", a.lower()):
            labels[m.group(1)] = m.group(2)
    return labels
def _esc(s):
    return re.sub(r"([.^$*+?()\[\]{}|\\])", r"\\\1", s)
"#;

/// Python that fills `labels` (ticket number → kind) for the ticket lines in `tickets`.
fn classify_code(p: &Powers) -> String {
    let classify = format!("CLASSIFY = {CLASSIFY:?}\n");
    if p.recursive {
        // Hand thirds of the tickets to sub-agents, each of which classifies with sub-calls.
        format!(
            "{classify}total = sum(len(t) + 1 for t in tickets)\n\
             parts = _chunks(tickets, total // 3 + 1)\n\
             answers = [rlm_query({CHILD_TASK:?} + \"\\n\" + CLASSIFY + part) for part in parts]\n\
             print(len(parts), \"sub-agents;\", sum(a.startswith(\"Error\") for a in answers), \"failed\")\n\
             labels = _labels(answers)\n"
        )
    } else if p.sub_calls {
        format!(
            "{classify}chunks = _chunks(tickets, {})\n\
             answers = llm_batch([CLASSIFY + c for c in chunks])\n\
             print(len(chunks), \"sub-calls;\", sum(a.startswith(\"Error\") for a in answers), \"failed\")\n\
             labels = _labels(answers)\n",
            p.chunk_chars
        )
    } else {
        // No sub-calls: the best plain Python can do is keywords.
        r#"KINDS = [("warranty", r"covered|guarantee|coverage|warranty"),
         ("billing", r"charged|invoice|refund|payment|fee|receipt"),
         ("technical", r"crash|error|sync|export|bug"),
         ("shipping", r"parcel|courier|package|tracking|deliver"),
         ("account", r"password|profile|username|account")]
labels = {}
for t in tickets:
    body = t.split(" | ", 3)[-1].lower()
    labels[re.match(r"Ticket (\d+)", t).group(1)] = next((k for k, pat in KINDS if re.search(pat, body)), "unknown")
"#
        .to_string()
    }
}

/// The Python a competent model writes for a task, once it has looked at the context.
fn solve_code(ask: &Ask, p: &Powers) -> Option<String> {
    let body = match ask {
        Ask::Needle(key) => format!(
            "hits = search(r\"access code for project {key} is \\d+\")\n\
             print(len(hits), \"hits\")\n\
             for h in hits[:3]:\n    print(h[\"line\"][:300])\n\
             m = re.search(r\"is (\\d+)\", hits[0][\"text\"]) if hits else None\n\
             result = m.group(1) if m else \"not found\"\n"
        ),
        Ask::Count(kind) => format!(
            "tickets = [l for l in _lines(context) if l.startswith(\"Ticket \")]\n\
             print(len(tickets), \"tickets\")\n{}\
             print(collections.Counter(labels.values()))\n\
             result = str(sum(1 for v in labels.values() if v == {kind:?}))\n",
            classify_code(p)
        ),
        Ask::Pairs(month) => format!(
            "tickets = [l for l in _lines(context) if l.startswith(\"Ticket \") and \"| 2024-{month}-\" in l]\n\
             print(len(tickets), \"tickets in 2024-{month}\")\n{}\
             users = sorted({{t.split(\" | \")[1].replace(\"user \", \"\") for t in tickets \
             if labels.get(re.match(r\"Ticket (\\d+)\", t).group(1)) == \"warranty\"}}, key=lambda u: int(u[1:]))\n\
             print(\"warranty claims from\", users)\n\
             pairs = [f\"({{a}}, {{b}})\" for i, a in enumerate(users) for b in users[i + 1:]]\n\
             result = \"; \".join(pairs) if pairs else \"none\"\n",
            classify_code(p)
        ),
        Ask::Hops(who) if p.sub_calls => format!(
            "def ask(doc, q):\n    return llm_query(\"Document:\\n\" + doc + \"\\n\\nQuestion: \" + q + \" Answer with the name only.\").strip().rstrip(\".\")\n\
             h = search(r\"Profile: {who} is a\")\n\
             company = ask(h[0][\"line\"], \"Which company does {who} work for?\")\n\
             h = search(_esc(company) + \" is a \")\n\
             city = ask(h[0][\"line\"], \"In which city is \" + company + \" headquartered?\")\n\
             h = search(_esc(city) + \" is a city in \")\n\
             result = ask(h[0][\"line\"], \"In which country is the city \" + city + \"?\")\n\
             print(company, \"->\", city, \"->\", result)\n"
        ),
        Ask::Hops(who) => format!(
            "h = search(r\"Profile: {who} is a\")\n\
             company = re.search(r\"works at ([^.]+)\\.\", h[0][\"line\"]).group(1)\n\
             h = search(_esc(company) + \" is a \")\n\
             city = re.search(r\"headquartered in ([^.]+)\\.\", h[0][\"line\"]).group(1)\n\
             h = search(_esc(city) + \" is a city in \")\n\
             result = re.search(r\"is a city in (\\w+)\", h[0][\"line\"]).group(1)\n\
             print(company, \"->\", city, \"->\", result)\n"
        ),
        Ask::ClassifyTickets => format!(
            "tickets = [l for l in _lines(context) if l.startswith(\"Ticket \")]\n{}\
             result = \"\\n\".join(f\"{{k}}: {{v}}\" for k, v in labels.items())\n\
             print(len(labels), \"of\", len(tickets), \"tickets classified\")\n",
            classify_code(p)
        ),
        Ask::Unknown => return None,
    };
    Some(format!(
        "```repl\n{HELPERS}{body}print(\"ANSWER:\", result[:500])\n```"
    ))
}

fn root(messages: &[(String, String)], system: &str) -> String {
    let p = powers(system);
    // In a session every question opens with "Question: "; answer the latest one, counting the
    // turns since it.
    let start = messages
        .iter()
        .rposition(|(r, t)| r == "user" && t.starts_with("Question: "))
        .unwrap_or(0);
    let messages = &messages[start..];
    let users: Vec<&str> = messages
        .iter()
        .filter(|(r, _)| r == "user")
        .map(|(_, t)| t.as_str())
        .collect();
    let turns = messages.iter().filter(|(r, _)| r == "assistant").count();
    let question = users
        .first()
        .and_then(|u| u.strip_prefix("Question: "))
        .map_or("", |q| {
            q.split("\n\nThe document is in").next().unwrap_or(q)
        });
    let last = users.last().copied().unwrap_or("");
    match turns {
        0 => "Let me look at the context first.\n```repl\nprint(type(context).__name__, len(context))\n\
              print(context[:300] if isinstance(context, str) else context[:2])\n```"
            .to_string(),
        1 => {
            // A sub-agent's task is in its context: read it from what the first step printed.
            let ask = match ask_of(question) {
                Ask::Unknown => ask_of(last),
                a => a,
            };
            match solve_code(&ask, &p) {
                Some(code) => format!("Now I will work it out.\n{code}"),
                None => "FINAL(I cannot answer this question.)".to_string(),
            }
        }
        _ if last.contains("Traceback") || last.contains("Error:") => {
            let why = last.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            format!("The code failed, so I have no answer.\nFINAL(No answer: {why})")
        }
        _ => "The output shows the answer.\nFINAL_VAR(result)".to_string(),
    }
}

/// Answer from the text in the prompt, as a model reading it would.
fn read(question: &str, text: &str) -> Option<String> {
    match ask_of(question) {
        Ask::Needle(key) => re(&format!(r"access code for project {key} is (\d+)"))
            .captures(text)
            .map(|c| c[1].to_string()),
        Ask::Count(kind) => Some(
            text.lines()
                .filter(|l| l.starts_with("Ticket ") && ticket_kind(l) == Some(kind.as_str()))
                .count()
                .to_string(),
        ),
        Ask::Pairs(month) => {
            let mut users: Vec<u32> = text
                .lines()
                .filter(|l| l.contains(&format!("| 2024-{month}-")))
                .filter(|l| ticket_kind(l) == Some("warranty"))
                .filter_map(|l| l.split(" | ").nth(1)?.strip_prefix("user u")?.parse().ok())
                .collect();
            users.sort_unstable();
            users.dedup();
            let pairs: Vec<String> = users
                .iter()
                .enumerate()
                .flat_map(|(i, a)| users[i + 1..].iter().map(move |b| format!("(u{a}, u{b})")))
                .collect();
            Some(if pairs.is_empty() {
                "none".into()
            } else {
                pairs.join("; ")
            })
        }
        Ask::Hops(who) => {
            let company = capture(
                text,
                &format!(
                    r"Profile: {} is a \w+ who works at ([^.]+)\.",
                    regex::escape(&who)
                ),
            )?;
            let city = capture(
                text,
                &format!(
                    r"(?m)(?:^|\n){} is a \w+ firm headquartered in ([^.]+)\.",
                    regex::escape(&company)
                ),
            )?;
            capture(
                text,
                &format!(r"(?:^|\n){} is a city in (\w+)\.", regex::escape(&city)),
            )
        }
        Ask::ClassifyTickets | Ask::Unknown => None,
    }
}

fn capture(text: &str, pattern: &str) -> Option<String> {
    re(pattern).captures(text).map(|c| c[1].to_string())
}

/// The `direct` baseline: the context (as much as fit) is in the prompt.
fn direct(prompt: &str) -> String {
    let text = prompt
        .split("<context>")
        .nth(1)
        .and_then(|r| r.split("</context>").next())
        .unwrap_or("");
    let question = prompt.rsplit("Question: ").next().unwrap_or("");
    read(question, text).unwrap_or_else(|| "The context does not say.".to_string())
}

static DOC_Q: LazyLock<Regex> = LazyLock::new(|| {
    re(
        r"(?s)^Document:\n(.*)\n\nQuestion: (Which company does .+ work for|In which city is (.+) headquartered|In which country is the city (.+))\?",
    )
});

/// A sub-call: classify tickets, or answer a question about one document.
fn sub_call(prompt: &str) -> String {
    if let Some(tickets) = prompt.strip_prefix(CLASSIFY) {
        return tickets
            .lines()
            .filter_map(|l| {
                let n = l.strip_prefix("Ticket ")?.split(' ').next()?;
                Some(format!("{n}: {}", ticket_kind(l).unwrap_or("unknown")))
            })
            .collect::<Vec<_>>()
            .join("\n");
    }
    if let Some(c) = DOC_Q.captures(prompt) {
        let doc = &c[1];
        let found = if c.get(3).is_some() {
            capture(doc, r"headquartered in ([^.]+)\.")
        } else if c.get(4).is_some() {
            capture(doc, r"is a city in (\w+)\.")
        } else {
            capture(doc, r"works at ([^.]+)\.")
        };
        return found.unwrap_or_else(|| "The document does not say.".into());
    }
    "I cannot answer that from the text given.".to_string()
}

/// The judge: is the answer the gold answer?
fn judge(rest: &str) -> String {
    let field = |name: &str| {
        rest.split(&format!("\n{name}: "))
            .nth(1)
            .map_or("", |r| r.split('\n').next().unwrap_or(""))
    };
    let (gold, answer) = (normalize(field("Gold answer")), normalize(field("Answer")));
    let ok = (!gold.is_empty() && answer.contains(&gold)) || (gold.is_empty() && answer == "none");
    if ok { "CORRECT" } else { "INCORRECT" }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rlm_eval::datasets::{Family, generate};

    fn conv(system: &str, user: &str) -> Vec<(String, String)> {
        vec![
            ("system".into(), system.into()),
            ("user".into(), user.into()),
        ]
    }

    #[test]
    fn reads_every_family_from_full_text() {
        for f in Family::ALL {
            let t = generate(f, 4_000, 11);
            let text = rlm_eval::method::context_text(&t.context);
            let answer = read(&t.question, &text).unwrap();
            assert_eq!(
                t.scorer.score(&answer, &t.answer),
                1.0,
                "{f:?}: {answer} vs {}",
                t.answer
            );
        }
    }

    #[test]
    fn sub_calls_classify_and_read() {
        let reply = sub_call(&format!(
            "{CLASSIFY}Ticket 1001 | user u3 | 2024-02-01 | Hi, my parcel has not arrived after two weeks. Thanks.\nTicket 1002 | user u4 | 2024-02-02 | please refund the duplicate payment on my card."
        ));
        assert_eq!(reply, "1001: shipping\n1002: billing");
        let doc = "Document:\nProfile: Ivo Khan 7 is a pilot who works at Vexa Labs 1. He likes tea.\n\nQuestion: Which company does Ivo Khan 7 work for? Answer with the name only.";
        assert_eq!(sub_call(doc), "Vexa Labs 1");
        assert_eq!(
            respond(&conv(
                "",
                &format!("{JUDGE_PREFIX}\nQuestion: q\nGold answer: 42\nAnswer: It is 42.\n")
            )),
            "CORRECT"
        );
    }

    #[test]
    fn root_adapts_to_depth() {
        let sys0 =
            "persistent Python REPL ... llm_query/llm_batch/rlm_query are disabled in this run";
        let sys1 = "persistent Python REPL ... It can read about 30000 characters per call";
        let sys2 = "persistent Python REPL ... It can read about 30000 characters per call ... hand a sub-task to another agent";
        let q = "Question: Each ticket ... How many tickets are about a billing problem? Answer with a number.\n\nThe document is in `context`";
        let turn1 = |sys: &str| {
            let mut m = conv(sys, q);
            m.push(("assistant".into(), "look".into()));
            m.push(("user".into(), "Output:\nstr 100".into()));
            respond(&m)
        };
        assert!(turn1(sys0).contains("KINDS = "));
        assert!(turn1(sys1).contains("llm_batch("));
        assert!(turn1(sys2).contains("rlm_query("));
    }
}
