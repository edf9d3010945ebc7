//! `re.findall`, `re.finditer` and `re.search` over a whole context run on the host's regex engine and
//! give exactly CPython's results (see the guest's `rlm_fastre`): every pattern below is swept
//! both over the context and over an equal copy that CPython sweeps alone, and the results must
//! be the same; patterns outside the translated subset fall back to CPython.

mod common;

use common::{ok, out, sandbox_with};
use rlm_sandbox::{Context, Limits};

/// About 96 KB of ASCII lines: names, dates, e-mail addresses, numbers, mixed case, tabs and a
/// control character that Python's `\s` matches and Unicode's does not.
fn document() -> String {
    let names = [
        "Ada Byron",
        "alan turing",
        "Grace HOPPER",
        "Tom Reyes",
        "Rosa Diaz",
    ];
    let verbs = [
        "was born in",
        "grew up in",
        "RAISED in",
        "lived in",
        "Born In",
    ];
    let towns = ["Lyon", "york", "Oslo", "Quito", "Perth"];
    let mut s = String::from("header line\n");
    for i in 0..1200 {
        let n = names[i % 5];
        s.push_str(&format!(
            "Name: {n}\t{} {} on 19{:02}-{:02}-{:02}; mail {}{}@example.com x{}y ab{}c\x1c{}\n",
            verbs[(i / 5) % 5],
            towns[(i / 25) % 5],
            i % 100,
            i % 12 + 1,
            i % 28 + 1,
            n.split(' ').next().unwrap_or("x").to_lowercase(),
            i,
            "-".repeat(i % 7),
            "ab".repeat(i % 3),
            if i % 9 == 0 {
                "  42 the end"
            } else {
                "the THE then"
            },
        ));
    }
    s.push_str("final end");
    s
}

/// The same with non-ASCII characters on every line: accents, a sharp s, a dotted capital I, the
/// Kelvin sign (which `re.I` matches with `k`), dashes, quotes, CJK and an emoji.
fn unicode_document() -> String {
    let extra = [
        "Émile Zoë",
        "Straße",
        "İstanbul",
        "\u{212a}elvin",
        "a \u{2013} b",
        "“quoted”",
        "日本",
        "😀",
    ];
    document()
        .lines()
        .enumerate()
        .map(|(i, line)| format!("{line} {}\n", extra[i % extra.len()]))
        .collect()
}

/// (pattern, flags) pairs that the guest translates for the host.
const TRANSLATED: &[(&str, &str)] = &[
    (r".{0,200}(grew up|born|raised|childhood).{0,200}", "re.I"),
    (r"\d+", "0"),
    (r"[A-Z][a-z]+ [A-Z][a-z]+", "0"),
    (r"(\w+)@(\w+)\.com", "0"),
    (r"\bthe\b", "re.I"),
    (r"^Name: (.*)$", "re.M"),
    (r"(?i)born in (\w+)", "0"),
    (r"a|ab", "0"),
    (r"(a)|(b)c", "0"),
    (r"x.*?y", "0"),
    (r"[^\n]{10,20}\n", "0"),
    (r"\s+\d", "0"),
    (r"[\w.-]+@", "0"),
    (r"(?s)Name.{0,80}Lyon", "0"),
    (r"(\d{4})-(\d{2})-(\d{2})", "0"),
    (r"\Aheader", "0"),
    (r"end\Z", "0"),
    (r"[^a-z\s]+", "re.I"),
    (r"(?:ab)+c", "0"),
    (r"(ab)*c", "0"),
    (r"\W+", "re.A"),
];

/// Patterns CPython keeps (back-references, look-around, empty matches, `$`, `\B`, scoped flags,
/// a non-ASCII literal).
const KEPT: &[(&str, &str)] = &[
    (r"(\w)\1", "0"),
    (r"Name(?=: T)", "0"),
    (r"x*", "0"),
    (r"end$", "0"),
    (r"\Bhe", "0"),
    (r"(?i:born)", "0"),
    ("caf\u{e9}", "0"),
];

/// `facts(m, text)`: everything a `re.Match` tells, to compare a sweep of the context with
/// CPython's own sweep of a copy (`text` is the string each was swept over).
const FACTS: &str = r#"
def facts(m, text):
    g = m.re.groups
    return (
        m.span(), m.groups(), m.groupdict(), m.group(0), m[0], m.pos, m.endpos, m.lastindex,
        m.lastgroup, m.regs, m.re.pattern, m.re.flags, m.string is text, bool(m), repr(m),
        isinstance(m, re.Match), [m.span(i) for i in range(g + 1)], m.expand(r'<\g<0>>'),
        m.__class__,
    )
"#;

/// A step that sweeps each case over the context and over a copy, printing the cases whose
/// results differ (and, when `found`, those that match nothing: they would prove little).
fn compare_step(cases: &[(&str, &str)], found: bool) -> String {
    let list = cases
        .iter()
        .map(|(p, f)| format!("({p:?}, {f})"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "import re\ncopy = (' ' + context)[1:]\nassert copy == context and copy is not context\n\
         {FACTS}\n\
         bad = []\nfor p, f in [{list}]:\n\
         \x20   if re.findall(p, context, f) != re.findall(p, copy, f):\n\
         \x20       bad.append(('findall', p))\n\
         \x20   a = [facts(m, context) for m in re.finditer(p, context, f)]\n\
         \x20   b = [facts(m, copy) for m in re.finditer(p, copy, f)]\n\
         \x20   if a != b or (not a and {found}):\n\
         \x20       bad.append(('finditer', p, len(a), len(b)))\n\
         \x20   a, b = re.search(p, context, f), re.search(p, copy, f)\n\
         \x20   if (a and facts(a, context)) != (b and facts(b, copy)):\n\
         \x20       bad.append(('search', p))\n\
         print(bad)",
        found = if found { "True" } else { "False" },
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn sweeps_of_a_whole_context_give_cpythons_results() {
    let unicode = [
        ("(?i)stra(ss|ß)e", "0"),
        ("[éëÉ]", "0"),
        ("k", "re.I"),
        (r"\w+ \w+$", "re.M"),
        (r"[^\x00-\x7f]+", "0"),
        (r"“(\w+)”", "0"),
    ];
    // (Every fixed case finds something in the ASCII text; in the other, `end\Z` cannot.)
    for (text, found) in [(document(), true), (unicode_document(), false)] {
        let mut sb = sandbox_with(Context::text(text), Limits::default()).await;
        assert_eq!(out(&mut sb, &compare_step(TRANSLATED, found)).await, "[]");
        assert_eq!(out(&mut sb, &compare_step(KEPT, false)).await, "[]");
        assert_eq!(out(&mut sb, &compare_step(&unicode, false)).await, "[]");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn translated_patterns_go_to_the_host_and_the_rest_stay_in_cpython() {
    let mut sb = sandbox_with(Context::text(document()), Limits::default()).await;
    for (cases, host_calls) in [(TRANSLATED, 1), (KEPT, 0)] {
        for (p, f) in cases {
            let r = ok(
                &mut sb,
                &format!("n = len(re.findall({p:?}, context, {f}))"),
            )
            .await;
            assert_eq!(r.host_calls, host_calls, "{p}");
            let r = ok(&mut sb, &format!("m = re.search({p:?}, context, {f})")).await;
            assert_eq!(r.host_calls, host_calls, "{p}");
        }
    }
    // The sweep a real model wrote: CPython confirms 960 matches (most lines match here) at a
    // fraction of the fuel its backtracking spends sweeping the copy (111 M vs 1.6 G units).
    let sweep = r"re.findall(r'.{0,200}(grew up|born|raised|childhood).{0,200}', TEXT, re.I)";
    let fast = ok(
        &mut sb,
        &format!("hits = {}", sweep.replace("TEXT", "context")),
    )
    .await;
    let slow = ok(
        &mut sb,
        &format!(
            "copy = (' ' + context)[1:]\nsame = {} == hits",
            sweep.replace("TEXT", "copy")
        ),
    )
    .await;
    assert_eq!(out(&mut sb, "print(same, len(hits))").await, "True 960");
    assert!(fast.fuel * 10 < slow.fuel, "{} vs {}", fast.fuel, slow.fuel);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loop_of_searches_leaves_the_steps_host_calls_to_the_rest() {
    let mut sb = sandbox_with(Context::text(document()), Limits::default()).await;
    let r = ok(
        &mut sb,
        r"hits = sum(1 for i in range(1500) if re.search(rf'mail \w+{i}@', context))",
    )
    .await;
    assert_eq!(r.host_calls, 1000, "{r:?}");
    assert_eq!(out(&mut sb, "print(hits)").await, "1200");
    // The next step may sweep on the host again.
    let r = ok(&mut sb, r"m = re.search(r'mail \w+7@', context)").await;
    assert_eq!(r.host_calls, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_ascii_context_is_swept_over_its_own_alphabet() {
    let mut sb = sandbox_with(Context::text(unicode_document()), Limits::default()).await;
    // The first sweep also reads the text's alphabet.
    let r = ok(&mut sb, r"a = re.findall(r'(?i)born in (\w+)', context)").await;
    assert_eq!(r.host_calls, 2);
    let r = ok(&mut sb, r"b = re.findall(r'(?i)k', context)").await;
    assert_eq!(r.host_calls, 1);
    // `\b` stays in CPython here: the engines' Unicode word characters differ.
    let r = ok(&mut sb, r"c = re.findall(r'\bborn\b', context)").await;
    assert_eq!(r.host_calls, 0);
    let copy = "copy = (' ' + context)[1:]\nprint(len(a), len(b), len(c), \
                a == re.findall(r'(?i)born in (\\w+)', copy), b == re.findall(r'(?i)k', copy))";
    assert_eq!(out(&mut sb, copy).await, "480 400 240 True True");
}

#[tokio::test(flavor = "multi_thread")]
async fn small_contexts_and_other_texts_stay_in_cpython() {
    {
        let mut sb = sandbox_with(
            Context::text("born in Lyon\n".repeat(100)),
            Limits::default(),
        )
        .await;
        let r = ok(
            &mut sb,
            "n = len(re.findall(r'born in (\\w+)', context))\nm = len(re.findall(r'\\w+', 'a b'))",
        )
        .await;
        assert_eq!(r.host_calls, 0);
        assert_eq!(out(&mut sb, "print(n > 0, m)").await, "True 2");
    }
}

/// Random patterns built from the translated subset (and a few constructs outside it), each
/// swept over the context and over a copy: the same results every time.
const RANDOM_PATTERNS: &str = r#"
import re, random
rng = random.Random(7)
copy = (' ' + context)[1:]
ATOMS = ['$', '\\Z', '\\B', 'a', 'b', 'e', 'N', 'x', ' ', '\\n', '.', '\\d', '\\w', '\\s', '\\W',
         '[a-e]', '[^a-z]', '[A-Z0-9]', '\\.', '-', '@', '[\\t\\x1c]', '[aeiou]', 'th', 'Born',
         'é', 'ß', 'k', '[^\\x00-\\x7f]', '[À-ÿ]']
def gen(depth=0):
    parts = []
    for _ in range(rng.randint(1, 4)):
        r = rng.random()
        if r < 0.55 or depth > 2:
            a = rng.choice(ATOMS)
        elif r < 0.7:
            a = '(' + gen(depth + 1) + ')'
        elif r < 0.8:
            a = '(?:' + gen(depth + 1) + '|' + gen(depth + 1) + ')'
        elif r < 0.9:
            a = '\\b' + rng.choice(ATOMS)
        else:
            a = rng.choice(['^', '\\A']) + rng.choice(ATOMS)
        if rng.random() < 0.15:
            a = '(?:' + a + ')' + rng.choice(['*', '+', '?', '*?', '+?', '{1,3}', '{0,5}?', '{2}'])
        parts.append(a)
    return ''.join(parts)
bad, swept = [], 0
for _ in range(60):
    p, f = gen(), rng.choice([0, re.I, re.M, re.S, re.I | re.M, re.A])
    try:
        re.compile(p, f)
    except re.error:
        continue
    swept += 1
    if re.findall(p, context, f) != re.findall(p, copy, f):
        bad.append((p, f))
    elif [facts(m, context) for m in re.finditer(p, context, f)] != \
            [facts(m, copy) for m in re.finditer(p, copy, f)]:
        bad.append((p, f))
    else:
        a, b = re.search(p, context, f), re.search(p, copy, f)
        if (a and facts(a, context)) != (b and facts(b, copy)):
            bad.append((p, f))
print(swept > 50, bad)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn random_patterns_give_cpythons_results() {
    for text in [document(), unicode_document()] {
        let mut sb = sandbox_with(Context::text(text), Limits::default()).await;
        let r = ok(&mut sb, &format!("{FACTS}\n{RANDOM_PATTERNS}")).await;
        assert_eq!(r.stdout.trim(), "True []");
        assert!(
            r.host_calls > 30,
            "most patterns go to the host: {}",
            r.host_calls
        );
    }
}

/// A whole context and a lazy one, attached in either order: each sweeps its own way (the
/// lazy contexts' `re` wrappers sit over the host sweeps whichever came first).
#[tokio::test(flavor = "multi_thread")]
async fn a_whole_context_and_a_lazy_one_each_sweep_their_own_way() {
    let doc = document();
    for lazy_first in [false, true] {
        let (whole, lazy) = (Context::text(doc.clone()), Context::text(doc.repeat(2)));
        let (first, second) = if lazy_first {
            (lazy, whole)
        } else {
            (whole, lazy)
        };
        let mut sb = rlm_sandbox::Sandbox::builder(common::engine())
            .limits(Limits {
                lazy_threshold_chars: 150_000,
                ..Limits::default()
            })
            .context(first)
            .context(second)
            .build()
            .await
            .unwrap();
        let (w, l) = if lazy_first {
            ("context_1", "context")
        } else {
            ("context", "context_1")
        };
        assert_eq!(
            out(
                &mut sb,
                &format!("print(type({w}).__name__, type({l}).__name__)")
            )
            .await,
            "str LazyText"
        );
        let r = ok(
            &mut sb,
            &format!(r"a = re.findall(r'born in (\w+)', {w}, re.I)"),
        )
        .await;
        assert_eq!(r.host_calls, 1, "lazy first: {lazy_first}");
        let r = ok(
            &mut sb,
            &format!(r"b = re.findall(r'born in (\w+)', {l}, re.I)"),
        )
        .await;
        assert!(r.host_calls > 0, "the lazy text is read from the host");
        assert_eq!(
            out(
                &mut sb,
                &format!(
                    r"print(a == re.findall(r'born in (\w+)', (' ' + {w})[1:], re.I), b == a + a, len(a))"
                )
            )
            .await,
            "True True 480",
            "lazy first: {lazy_first}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn too_many_matches_or_characters_leave_the_sweep_to_cpython() {
    // 150,000 matches: the host answers 100,001 spans, one more than a sweep may take.
    let mut sb = sandbox_with(Context::text("a".repeat(150_000)), Limits::default()).await;
    let r = ok(&mut sb, "n = len(re.findall('a', context))").await;
    assert_eq!(r.host_calls, 1);
    assert_eq!(out(&mut sb, "print(n)").await, "150000");
    // 5,000 distinct characters: the host reports no alphabet, and CPython sweeps.
    let many: String = (0x4E00u32..0x4E00 + 5000)
        .filter_map(char::from_u32)
        .collect::<String>()
        .repeat(14);
    let mut sb = sandbox_with(Context::text(many), Limits::default()).await;
    let r = ok(&mut sb, "n = len(re.findall('\u{4e01}\u{4e02}', context))").await;
    assert_eq!(r.host_calls, 1, "the alphabet only, no sweep");
    assert_eq!(out(&mut sb, "print(n)").await, "14");
}
