//! `context`: Python str semantics in characters, lazy above the threshold, lists and JSON,
//! host-side search.

mod common;

use common::*;
use rlm_sandbox::{Context, Limits};

/// A text mixing 1-, 2-, 3- and 4-byte UTF-8 characters and several line-break styles.
fn unicode_text(repeat: usize) -> String {
    let mut s = String::new();
    for i in 0..repeat {
        s.push_str(&format!(
            "line {i}: héllo wörld — 日本語テキスト 𝄞𝕏 emoji 🎉 done\r\nnext Ωμέγα\tend\n"
        ));
    }
    s
}

/// The same checks, run once with `context` a real str and once lazy: `ref_` is a real str
/// built inside the guest, so Python itself is the reference.
const COMPARE: &str = r#"
ref_ = context if isinstance(context, str) else ''.join(context.chunks(1000, 0))
n = len(ref_)
assert len(context) == n, (len(context), n)
import random
rng = random.Random(7)
for _ in range(300):
    a, b = rng.randrange(-n - 5, n + 5), rng.randrange(-n - 5, n + 5)
    step = rng.choice([1, 1, 1, 2, 3, -1, -2])
    # A stepped slice is a real str, so its result must fit the load limit.
    if step == 1 or isinstance(context, str) or len(range(*slice(a, b, step).indices(n))) <= 1000:
        assert context[a:b:step] == ref_[a:b:step], (a, b, step)
    if -n <= a < n:
        assert context[a] == ref_[a], a
for needle in ['𝄞', 'Ωμέγα', '\r\n', 'line 7:', 'absent', '', 'é']:
    assert context.find(needle) == ref_.find(needle), needle
    assert context.rfind(needle) == ref_.rfind(needle), needle
    assert context.count(needle) == ref_.count(needle), needle
    assert context.find(needle, 100, 5000) == ref_.find(needle, 100, 5000), needle
    assert context.rfind(needle, -3000, -10) == ref_.rfind(needle, -3000, -10), needle
    assert (needle in context) == (needle in ref_), needle
assert context.startswith('line 0') and context.endswith('end\n')
assert context.startswith(('zzz', 'line')) and not context.endswith('x')
assert context.split('\n', 3) [:3] == ref_.split('\n', 3)[:3]
print('ok', n)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn small_context_is_a_real_str_with_code_point_offsets() {
    let text = unicode_text(200);
    let chars = text.chars().count();
    let mut sb = sandbox(&text).await;
    assert_eq!(out(&mut sb, "type(context).__name__").await, "'str'");
    assert_eq!(out(&mut sb, COMPARE).await, format!("ok {chars}"));
}

#[tokio::test(flavor = "multi_thread")]
async fn lazy_context_follows_python_str_semantics() {
    let text = unicode_text(200);
    let chars = text.chars().count();
    let limits = Limits {
        lazy_threshold_chars: 1000,
        read_chunk_chars: 700,
        ..Limits::default()
    };
    let mut sb = sandbox_with(Context::text(text), limits).await;
    assert_eq!(out(&mut sb, "type(context).__name__").await, "'LazyText'");
    assert_eq!(out(&mut sb, COMPARE).await, format!("ok {chars}"));
    // Lines, split pieces and iteration agree with str.
    let r = out(
        &mut sb,
        "assert list(context.iter_lines()) == ref_.splitlines()\n\
         assert list(context.iter_lines(True)) == ref_.splitlines(True)\n\
         assert list(context.iter_split('\\n')) == [str(p) for p in ref_.split('\\n')]\n\
         assert ''.join(iter(context)) == ref_\n\
         head = context.split(None, 4)\n\
         assert head[:4] == ref_.split(None, 4)[:4], head[:4]\n\
         rest = context.split('\\n', 1)[1]\n\
         print(type(rest).__name__, len(rest) == len(ref_.split('\\n', 1)[1]))",
    )
    .await;
    assert_eq!(r, "LazyText True");
}

#[tokio::test(flavor = "multi_thread")]
async fn lazy_context_serves_common_idioms_and_explains_the_rest() {
    let limits = Limits {
        lazy_threshold_chars: 100,
        ..Limits::default()
    };
    let text = (0..1000)
        .map(|i| format!("line {i} word\n"))
        .collect::<String>();
    let mut sb = sandbox_with(Context::text(text.clone()), limits).await;
    // What would copy the whole text says so, in one line, with what to do instead.
    let r = sb.exec("context.upper()").await.unwrap();
    let err = r.error.unwrap();
    assert!(
        err.contains("str.upper() would copy all 13,890 characters of this lazy text"),
        "{err}"
    );
    assert!(err.contains("context[a:b].upper("), "{err}");
    assert_eq!(
        err.trim().lines().last().unwrap().len(),
        err.trim().lines().last().unwrap().trim().len()
    );
    // Lines and split pieces come on demand, as the same values str would give.
    assert_eq!(
        out(
            &mut sb,
            "lines = context.splitlines()\nlen(lines), lines[0], lines[-1], lines[10:12]"
        )
        .await,
        "(1000, 'line 0 word', 'line 999 word', ['line 10 word', 'line 11 word'])"
    );
    assert_eq!(
        out(
            &mut sb,
            "w = context.split()\nlen(w), w[:3], sum(1 for x in context.split('\\n'))"
        )
        .await,
        "(3000, ['line', '0', 'word'], 1001)"
    );
    assert_eq!(
        out(
            &mut sb,
            "[l for l in context.splitlines() if l.endswith('7 word')][:2]"
        )
        .await,
        "['line 7 word', 'line 17 word']"
    );
    // Small slices are real strings with every method.
    assert_eq!(out(&mut sb, "context[:11].upper()").await, "'LINE 0 WORD'");
    assert!(
        out(&mut sb, "context")
            .await
            .starts_with("<lazy text: 13,890 characters")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn re_functions_accept_a_lazy_text() {
    // A small read chunk makes every pattern cross piece boundaries many times over.
    let limits = Limits {
        lazy_threshold_chars: 100,
        read_chunk_chars: 4096,
        ..Limits::default()
    };
    let text = (0..3000)
        .map(|i| {
            format!(
                "record {i}: user_{} paid ${}.{:02}\n",
                i % 97,
                i * 7 % 1000,
                i % 100
            )
        })
        .collect::<String>();
    let reference = r#"
import re
pat = r'user_(\d+) paid \$(\d+)\.(\d\d)'
ref_ = ''.join(context.chunks(1000)) if not isinstance(context, str) else context
got = (
    re.findall(pat, context), re.findall(r'^record \d+', context, re.M),
    [m.span() for m in re.finditer(r'paid \$9\d\d', context)],
    re.search(r'user_42 paid', context).start(), re.match(r'record (\d+)', context).group(1),
    re.compile(r'(?i)USER_5\b').findall(context)[:3], re.split(r'\n', context, maxsplit=2)[:2],
    re.search('absent', context),
)
want = (
    re.findall(pat, ref_), re.findall(r'^record \d+', ref_, re.M),
    [m.span() for m in re.finditer(r'paid \$9\d\d', ref_)],
    re.search(r'user_42 paid', ref_).start(), re.match(r'record (\d+)', ref_).group(1),
    re.compile(r'(?i)USER_5\b').findall(ref_)[:3], re.split(r'\n', ref_, maxsplit=2)[:2],
    re.search('absent', ref_),
)
for g, w in zip(got, want):
    assert g == w, (g, w)
m = re.search(r'user_42 paid', context)
print(type(context).__name__, len(got[0]), context[m.start():m.end()])
"#;
    let mut sb = sandbox_with(Context::text(text.clone()), limits).await;
    assert_eq!(out(&mut sb, reference).await, "LazyText 3000 user_42 paid");
    // re.sub over all of it would build a copy: a clear one-line error.
    let r = sb.exec("re.sub('a', 'b', context)").await.unwrap();
    assert!(
        r.error
            .unwrap()
            .contains("re.sub() over all of it would build a copy")
    );
    // A real str context leaves `re` untouched.
    let mut sb = sandbox_with(Context::text(text), Limits::default()).await;
    assert_eq!(out(&mut sb, reference).await, "str 3000 user_42 paid");
    assert_eq!(
        out(&mut sb, "type(re.compile('x')) is re.Pattern").await,
        "True"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn list_of_documents_and_json_contexts() {
    let mut sb = sandbox_with(
        Context::documents(["first doc", "second — doc", "third"]),
        Limits::default(),
    )
    .await;
    assert_eq!(
        out(&mut sb, "type(context).__name__, len(context), context[1]").await,
        "('list', 3, 'second — doc')"
    );

    let value = serde_json::json!({"patients": [{"name": "Ada", "age": 36}, {"name": "Bo", "age": 7}], "n": 2});
    let mut sb = sandbox_with(Context::json(value.clone()), Limits::default()).await;
    assert_eq!(
        out(&mut sb, "context['patients'][1]['name'], context['n']").await,
        "('Bo', 2)"
    );
    assert_eq!(out(&mut sb, "list(context)").await, "['patients', 'n']");

    // The same data, lazy: indexing and iteration load items on demand.
    let limits = Limits {
        lazy_threshold_chars: 10,
        ..Limits::default()
    };
    let mut sb = sandbox_with(Context::json(value), limits).await;
    assert_eq!(out(&mut sb, "type(context).__name__").await, "'LazyDict'");
    assert_eq!(
        out(&mut sb, "[p['name'] for p in context['patients']], context['n'], 'n' in context, sorted(context.keys())").await,
        "(['Ada', 'Bo'], 2, True, ['n', 'patients'])"
    );
    let big = Context::documents((0..50).map(|i| format!("document number {i} {}", "x".repeat(i))));
    let mut sb = sandbox_with(
        big,
        Limits {
            lazy_threshold_chars: 40,
            ..Limits::default()
        },
    )
    .await;
    assert_eq!(
        out(&mut sb, "type(context).__name__, len(context), context[3], type(context[49]).__name__, context[-1][:18]").await,
        "('LazyList', 50, 'document number 3 xxx', 'LazyText', 'document number 49')"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn search_returns_character_offsets_that_slice_back() {
    let text = unicode_text(300);
    for limits in [
        Limits::default(),
        Limits {
            lazy_threshold_chars: 500,
            ..Limits::default()
        },
    ] {
        let mut sb = sandbox_with(Context::text(text.clone()), limits).await;
        let r = out(
            &mut sb,
            "hits = search(r'𝄞𝕏|Ωμέγα', max=1000)\n\
             assert all(context[h['start']:h['end']] == h['text'] for h in hits)\n\
             first = search(r'line 12: (\\S+)')[0]\n\
             print(len(hits), first['text'], first['line'].startswith('line 12:'))",
        )
        .await;
        assert_eq!(r, "600 line 12: héllo True");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn search_caps_results_rejects_bad_patterns_and_finds_paths() {
    let mut sb = sandbox(&"abc ".repeat(50_000)).await;
    assert_eq!(out(&mut sb, "len(search('abc', max=20))").await, "20");
    assert_eq!(out(&mut sb, "len(search('abc', max=10**9))").await, "10000");
    assert_eq!(
        out(&mut sb, "len(search('ABC', ignore_case=True, max=5))").await,
        "5"
    );
    let r = sb.exec("search('(a')").await.unwrap();
    assert!(r.error.unwrap().contains("invalid search pattern"));
    // A pattern that backtracks catastrophically in Python's re is linear here.
    assert_eq!(out(&mut sb, "len(search(r'(a+)+$', max=5))").await, "0");

    let docs = Context::documents(["nothing here", "the needle is here", "another needle"]);
    let mut sb = sandbox_with(docs, Limits::default()).await;
    assert_eq!(
        out(
            &mut sb,
            "[(h['path'], h['start']) for h in search('needle')]"
        )
        .await,
        "[([1], 4), ([2], 8)]"
    );
}

/// `search` ignores case when the pattern has no capital letter of its own (ripgrep's smart
/// case), so `search("new drug allergy")` finds "New drug allergy"; a pattern with capitals is
/// exact, and says how many matches ignoring case would find when it finds none.
#[tokio::test(flavor = "multi_thread")]
async fn search_is_smart_about_case() {
    let doc = "Visit 3: New drug allergy recorded.\nnew drug allergy? no.\nNEW DRUG ALLERGY list\n";
    for limits in [
        Limits::default(),
        Limits {
            lazy_threshold_chars: 10,
            ..Limits::default()
        },
    ] {
        let mut sb = sandbox_with(Context::text(doc), limits).await;
        assert_eq!(out(&mut sb, "len(search('new drug allergy'))").await, "3");
        assert_eq!(out(&mut sb, "len(search(r'\\w+ drug allergy'))").await, "3");
        assert_eq!(out(&mut sb, "len(search('New drug allergy'))").await, "1");
        assert_eq!(
            out(
                &mut sb,
                "len(search('new drug allergy', ignore_case=False))"
            )
            .await,
            "1"
        );
        let r = sb.exec("print(search('New Drug Allergy'))").await.unwrap();
        assert_eq!(
            r.stdout,
            "search: no match for 'New Drug Allergy' as written; 3 ignoring case \
             (search(..., ignore_case=True))\n[]\n"
        );
        let r = sb.exec("print(search('Penicillin'))").await.unwrap();
        assert_eq!(r.stdout, "[]\n");
        // Each match carries a short snippet around it, within its line.
        assert_eq!(
            out(&mut sb, "search('recorded')[0]['snippet']").await,
            "'Visit 3: New drug allergy recorded.'"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn later_contexts_are_added_as_numbered_names() {
    let mut sb = sandbox("first").await;
    ok(&mut sb, "x = context").await;
    let name = sb.add_context(Context::text("second")).await.unwrap();
    assert_eq!(name, "context_1");
    assert_eq!(
        out(
            &mut sb,
            "x, context_1, search('sec', within='context_1')[0]['start']"
        )
        .await,
        "('first', 'second', 0)"
    );
}

/// A context file of at least `MAP_MIN_BYTES` is mapped, not read (the host keeps no copy of
/// its own), and behaves as the same text held in memory: whole and lazy, with multi-byte
/// characters, and the host's search over it. JSON is parsed from the map; a large file that
/// is not UTF-8 is read and decoded lossily, as a small one is.
#[tokio::test(flavor = "multi_thread")]
async fn large_context_files_are_mapped_and_read_like_text_in_memory() {
    use rlm_sandbox::{ContextData, ContextFormat, MAP_MIN_BYTES};
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let text = unicode_text(MAP_MIN_BYTES as usize / 60 + 1);
    assert!(text.len() as u64 > MAP_MIN_BYTES);
    let path = dir.path().join("big.txt");
    std::fs::write(&path, &text).unwrap();
    let ContextData::Text(mapped) = Context::read(&path, ContextFormat::Auto).unwrap() else {
        panic!("text expected");
    };
    assert!(
        mapped.is_mapped(),
        "a file of {} bytes is mapped",
        text.len()
    );
    assert_eq!(mapped.as_str(), text);
    let chars = text.chars().count();
    for lazy in [false, true] {
        let limits = Limits {
            lazy_threshold_chars: if lazy { 1000 } else { u64::MAX },
            ..Limits::default()
        };
        let ctx = Context::load(&path, ContextFormat::Auto).unwrap();
        let mut sb = sandbox_with(ctx, limits).await;
        let kind = if lazy { "'LazyText'" } else { "'str'" };
        assert_eq!(out(&mut sb, "type(context).__name__").await, kind);
        assert_eq!(out(&mut sb, COMPARE).await, format!("ok {chars}"));
        let hits = out(
            &mut sb,
            "h = search('line 4321:')\nlen(h), context[h[0]['start']:h[0]['end']]",
        )
        .await;
        assert_eq!(hits, "(1, 'line 4321:')");
    }
    // A small file is read, as before.
    let small = dir.path().join("small.txt");
    std::fs::write(&small, "short").unwrap();
    let ContextData::Text(read) = Context::read(&small, ContextFormat::Auto).unwrap() else {
        panic!("text expected");
    };
    assert!(!read.is_mapped());
    // JSON parsed straight from a map.
    let json = dir.path().join("big.json");
    let items: Vec<String> = (0..20_000)
        .map(|i| format!("doc {i} — é {}", "x".repeat(40)))
        .collect();
    std::fs::write(&json, serde_json::to_string(&items).unwrap()).unwrap();
    assert!(std::fs::metadata(&json).unwrap().len() > MAP_MIN_BYTES);
    let ContextData::Json(v) = Context::read(&json, ContextFormat::Auto).unwrap() else {
        panic!("json expected");
    };
    assert_eq!(v.as_array().map(Vec::len), Some(20_000));
    assert_eq!(v[19_999], serde_json::json!(items[19_999]));
    // A large file with one invalid byte: read, with that byte replaced.
    let bad = dir.path().join("bad.txt");
    let mut f = std::fs::File::create(&bad).unwrap();
    f.write_all(&vec![b'a'; MAP_MIN_BYTES as usize]).unwrap();
    f.write_all(b"\xFFend").unwrap();
    drop(f);
    let ContextData::Text(lossy) = Context::read(&bad, ContextFormat::Auto).unwrap() else {
        panic!("text expected");
    };
    assert!(!lossy.is_mapped());
    assert!(lossy.ends_with("a\u{FFFD}end"));
}

/// A mapped context file written over in place, or truncated, while REPLs read it: every way
/// of reading sees the text as it was (the map is put aside as a private copy before the
/// writer goes on), and nothing crashes — where a plain map gave answers that disagreed, a
/// panic on a character split by the write, or `SIGBUS` for the pages cut off.
#[tokio::test(flavor = "multi_thread")]
async fn a_context_file_changed_during_a_run_keeps_its_text() {
    use rlm_sandbox::{ContextFormat, MAP_MIN_BYTES};
    use std::io::{Seek, SeekFrom, Write};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.txt");
    let block = "plain ascii line\n".repeat(9) + "a line with a needle in it\n";
    let text = block.repeat(MAP_MIN_BYTES as usize / block.len() + 10);
    let needles = text.matches("needle").count();
    std::fs::write(&path, &text).unwrap();
    let counts = "print(len(search('needle', max=10**6)), context.count('needle'), \
                  len(re.findall('needle', context)), len(context), repr(context[-8:]))";
    let expected = format!("{needles} {needles} {needles} {} 'e in it\\n'", text.len());
    let mut sessions = Vec::new();
    for lazy in [false, true] {
        let limits = Limits {
            lazy_threshold_chars: if lazy { 1000 } else { u64::MAX },
            ..Limits::default()
        };
        let ctx = Context::load(&path, ContextFormat::Auto).unwrap();
        let mut sb = sandbox_with(ctx, limits).await;
        ok(&mut sb, "import re").await;
        assert_eq!(out(&mut sb, counts).await, expected, "lazy: {lazy}");
        sessions.push(sb);
    }
    // Written over in place: every needle and a multi-byte character over ASCII.
    let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all(text.replace("needle", "NEEDLE").as_bytes())
        .unwrap();
    f.seek(SeekFrom::Start(3)).unwrap();
    f.write_all("é".as_bytes()).unwrap();
    drop(f);
    for sb in &mut sessions {
        assert_eq!(out(sb, counts).await, expected);
    }
    // Truncated (a log rotated by copytruncate).
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    for sb in &mut sessions {
        assert_eq!(out(sb, counts).await, expected);
    }
}
