//! What the guest sends becomes bounded host work: patterns are refused before they are parsed,
//! host scans stop with their step, and a search of a slice searches that slice.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rlm_sandbox::{Context, LimitHit, Limits};

/// This process's peak resident memory (`VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib << 10
}

/// CPU time this process has used (all threads), user and system.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_and_costly_patterns_are_refused_before_they_are_parsed() {
    let mut sb = sandbox("alpha beta gamma").await;
    let before = peak_rss();
    // An 8 MiB pattern took the host ~3 GiB and 12 s to refuse when it was parsed first; a loop
    // of them, or of other costly ones, each refused at once.
    let r = out(
        &mut sb,
        r"
msgs = []
for p in ['a' * 8_000_000, '(' * 9_000_000, r'\p{L}' * 10_000, '[' * 70_000, 'a' * 8_000_000, r'\w' * 3000]:
    try:
        search(p)
        msgs.append('searched')
    except Exception as e:
        msgs.append(str(e)[:60])
for m in msgs:
    print(m)
",
    )
    .await;
    let lines: Vec<&str> = r.lines().collect();
    assert_eq!(lines.len(), 6, "{r}");
    for (i, line) in lines.iter().enumerate() {
        if i == 2 || i == 5 {
            assert!(line.contains("Unicode classes"), "{line}");
        } else {
            assert!(line.contains("the pattern is"), "{line}");
        }
    }
    let grew = peak_rss().saturating_sub(before);
    eprintln!("peak RSS grew by {} MiB", grew >> 20);
    assert!(grew < 256 << 20, "peak RSS grew by {} MiB", grew >> 20);
    // Bad patterns under the bounds are refused with the parser's reason, and the REPL goes on.
    let r = out(
        &mut sb,
        "try:\n    search('(unclosed')\nexcept Exception as e:\n    print(e)",
    )
    .await;
    assert!(r.contains("invalid search pattern"), "{r}");
    assert_eq!(out(&mut sb, "len(search('beta'))").await, "1");
}

/// A text no pattern below matches, large enough that scanning it takes seconds.
fn haystack() -> String {
    "a".repeat(160 << 20)
}

#[tokio::test(flavor = "multi_thread")]
async fn host_scans_stop_with_their_step() {
    let limits = Limits {
        step_timeout: Duration::from_millis(500),
        // Lazy, so `count` and `find` are the host's.
        lazy_threshold_chars: 1 << 20,
        ..Limits::default()
    };
    let mut sb = sandbox_with(Context::text(haystack()), limits).await;
    for code in [
        // No byte of the text can end a window for this pattern: the lazy DFA steps it.
        "search(r'(?s)q.*z')",
        // Every character matches: counting them steps the host through the whole text.
        "context.count('a')",
    ] {
        let started = Instant::now();
        let r = sb.exec(code).await.unwrap();
        assert!(
            r.limit == Some(LimitHit::Deadline)
                || r.error.as_deref().is_some_and(|e| e.contains("time")),
            "{code}: {r:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(20), "{code}");
        // Once the step has ended, the host stops working for it: the process goes idle.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let cpu = cpu_time();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let busy = cpu_time() - cpu;
        eprintln!("{code}: {busy:?} of CPU after the step");
        assert!(
            busy < Duration::from_millis(400),
            "{code}: {busy:?} of CPU in the 1.5 s after the step ended"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_search_within_a_slice_finds_every_match_in_that_slice() {
    // 20,000 matches before the slice, 5,000 in it, 3,000 after.
    let mut text = String::new();
    for (n, tag) in [(20_000, "pre"), (5_000, "in"), (3_000, "post")] {
        for i in 0..n {
            text.push_str(&format!("{tag} {i}: needle here\n"));
        }
    }
    let limits = Limits {
        lazy_threshold_chars: 1 << 16,
        ..Limits::default()
    };
    let mut sb = sandbox_with(Context::text(text), limits).await;
    let r = out(
        &mut sb,
        r"
a = context.find('in 0:')
b = context.find('post 0:')
part = context[a:b]
hits = search('needle', within=part, max=10_000)
assert all(part[h['start']:h['end']] == 'needle' for h in hits)
# The slice is searched as a text of its own: ^ matches at its start.
first = search(r'\A\w+', within=context[a + 1:b], max=5)
print(len(hits), hits[0]['start'], hits[-1]['line'], first[0]['text'])
",
    )
    .await;
    assert_eq!(r, "5000 6 in 4999: needle here n");
}
