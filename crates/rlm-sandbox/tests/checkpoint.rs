//! Recovery after a trap from a checkpoint of the REPL's state (its cost follows the state, not
//! the history): what a checkpoint keeps (variables, functions that still see the globals,
//! closures, classes, matches, aliases of the contexts, the random streams), what makes it fall
//! back to replaying the journal, and that model code cannot use one to reach the host.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{EchoHost, engine, ok, out};
use rlm_sandbox::{Context, Limits, Sandbox, StepResult};

/// Limits that stop `while True: pass` quickly and checkpoint after every step (or never).
fn limits(checkpoint_after: Duration) -> Limits {
    Limits {
        fuel_per_step: 200_000_000,
        checkpoint_after,
        ..Limits::default()
    }
}

async fn sandbox_with(limits: Limits, context: Arc<Context>) -> Sandbox {
    common::sandbox_with(context, limits).await
}

async fn sandbox() -> Sandbox {
    sandbox_with(limits(Duration::ZERO), Context::text("the quick brown fox")).await
}

const TRAP: &str = "while True:\n    pass";

async fn trap(sb: &mut Sandbox) -> StepResult {
    let r = sb.exec(TRAP).await.unwrap();
    assert!(r.restored && !r.reset, "{r:?}");
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_restores_the_checkpoint_and_replays_nothing_of_the_history() {
    let mut sb = sandbox().await;
    // Each step does some work, more than saving the small state takes.
    for i in 0..60 {
        out(
            &mut sb,
            &format!("v{i} = [j * {i} for j in range(20)]\nfor _ in range(20_000):\n    pass"),
        )
        .await;
    }
    let r = trap(&mut sb).await;
    assert!(r.from_checkpoint, "{r:?}");
    // At most the last few steps: a checkpoint is skipped while the steps since the last one
    // took less time than taking it did.
    assert!(r.replayed <= 5, "61 entries in the journal: {r:?}");
    assert!(r.recovery > Duration::ZERO && r.total_time() >= r.recovery);
    let sum: usize = (0..60).map(|i| 190 * i).sum();
    let expr = (0..60)
        .map(|i| format!("sum(v{i})"))
        .collect::<Vec<_>>()
        .join(" + ");
    assert_eq!(
        out(&mut sb, &format!("print({expr})")).await,
        sum.to_string()
    );
    // And again, after more steps.
    out(&mut sb, "w = len(context)").await;
    let r = trap(&mut sb).await;
    assert!(r.from_checkpoint && r.replayed <= 6, "{r:?}");
    assert_eq!(out(&mut sb, "print(w, sum(v3))").await, "19 570");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_model_code_defines_survives_a_restore() {
    let mut sb = sandbox().await;
    let steps = [
        "import re\nfrom collections import Counter, defaultdict\n\
         words = context.split()\ntext = context\n\
         ms = list(re.finditer(r'\\w+', context))\nm = re.search('o', context)\n\
         full = re.fullmatch(r'a|ab', 'ab')\npat = re.compile(r'b(r)own')",
        "counter = 0\ndef bump(n=1):\n    global counter\n    counter += n\n    return counter\n\
         square = lambda x: x * x",
        "def make():\n    total = [0]\n    def add(x):\n        total[0] += x\n        return total[0]\n\
         \x20   def fact(n):\n        return 1 if n < 2 else n * fact(n - 1)\n    return add, fact\n\
         add, fact = make()\nadd(5)",
        "c = Counter('hello')\nd = defaultdict(list)\nd['a'].append(1)\ndd = defaultdict(lambda: 7)",
        "class Base:\n    kind = 'b'\n    def __init__(self, x):\n        self.x = x\n\
         \x20   @property\n    def double(self):\n        return self.x * 2\n\
         \x20   @classmethod\n    def make(cls):\n        return cls(3)\n\
         class Sub(Base):\n    def __init__(self, x):\n        super().__init__(x + 1)\n\
         objs = [Base(1), Sub(1)]",
        "from dataclasses import dataclass, field\n@dataclass\nclass P:\n    a: int\n\
         \x20   b: list = field(default_factory=list)\np = P(1)",
        "import functools, random, json\npart = functools.partial(bump, 2)\n\
         g = globals()\nsame = words\ndel json",
        // A pre-imported module's name, rebound by model code.
        "math = 'shadowed'\norder = list(globals())",
    ];
    for code in steps {
        out(&mut sb, code).await;
    }
    let next_random = out(
        &mut sb,
        "import random\nstate = random.getstate()\nprint(random.random())\nrandom.setstate(state)",
    )
    .await;
    let r = trap(&mut sb).await;
    assert!(r.from_checkpoint, "{r:?}");
    let checks = "\
assert text is context and same is words
assert [x.span() for x in ms] == [x.span() for x in re.finditer(r'\\w+', context)]
assert m.span() == (12, 13) and m.string is context
assert full.regs == ((0, 2),)
assert pat.search('a brown fox').group(1) == 'r'
assert bump() == 1 and counter == 1
counter = 10
assert bump() == 11, 'a function defined earlier still sees the REPL globals'
assert square(3) == 9 and add(1) == 6 and fact(5) == 120
assert c['l'] == 2 and d['a'] == [1] and dd['x'] == 7
assert objs[0].double == 2 and objs[1].x == 2 and isinstance(objs[1], Base)
assert Sub.make().x == 4
assert p == P(1) and P(2).b == [] and repr(p) == 'P(a=1, b=[])'
assert part() == 13
assert g is globals()
assert 'json' not in globals()
assert math == 'shadowed' and re.search('x', 'x')
assert [k for k in globals() if k in order] == order
print(random.random())";
    assert_eq!(out(&mut sb, checks).await, next_random);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_random_streams_go_on_where_they_were() {
    // Two REPLs with one seed: the one that traps and is restored draws what the other draws.
    let seed = [7u8; 32];
    let build = || async {
        Sandbox::builder(engine())
            .limits(limits(Duration::ZERO))
            .seed(seed)
            .build()
            .await
            .unwrap()
    };
    let (mut a, mut b) = (build().await, build().await);
    let draw = "import os, uuid, random\nprint(os.urandom(4).hex(), uuid.uuid4().hex[:8], random.random())";
    // Checkpoints after a draw, after a step that draws nothing (the saved state is reused),
    // and after a second draw (it must be saved anew). Each step works longer than a
    // checkpoint takes, so each is followed by one.
    let work = "\nn = 0\nfor _ in range(30_000):\n    n += 1";
    for sb in [&mut a, &mut b] {
        for step in [draw, "x = 1", draw] {
            let r = ok(sb, &format!("{step}{work}")).await;
            assert!(r.checkpointed, "{r:?}");
        }
    }
    let r = trap(&mut b).await;
    assert!(r.from_checkpoint && r.replayed == 0, "{r:?}");
    assert_eq!(out(&mut a, draw).await, out(&mut b, draw).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_steps_after_the_checkpoint_are_replayed_with_their_model_answers() {
    let host = Arc::new(EchoHost::default());
    let mut sb = Sandbox::builder(engine())
        .limits(limits(Duration::ZERO))
        .model(host.clone())
        .context(Context::text("doc"))
        .build()
        .await
        .unwrap();
    out(&mut sb, "a = 1").await;
    // A generator cannot be saved: from here on, checkpoints fail and the steps form a tail
    // after the one taken above.
    sb.define("query", serde_json::json!("q")).await.unwrap();
    out(
        &mut sb,
        "gen = (i for i in range(3))\nb = llm_query('hello')",
    )
    .await;
    out(&mut sb, "first = next(gen)").await;
    let calls = host.calls.load(Ordering::SeqCst);
    let r = trap(&mut sb).await;
    assert!(r.from_checkpoint, "{r:?}");
    assert_eq!(r.replayed, 3, "the definition and two steps: {r:?}");
    assert_eq!(
        host.calls.load(Ordering::SeqCst),
        calls,
        "no model call repeated"
    );
    assert_eq!(
        out(&mut sb, "print(a, b, query, first, next(gen))").await,
        "1 echo: hello q 0 1"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn state_that_cannot_be_saved_falls_back_to_the_journal() {
    let mut sb = sandbox().await;
    out(
        &mut sb,
        "gen = (i * i for i in range(10))\nfirst = next(gen)",
    )
    .await;
    out(&mut sb, "second = next(gen)").await;
    let r = trap(&mut sb).await;
    assert!(!r.from_checkpoint, "a generator cannot be saved: {r:?}");
    assert_eq!(
        out(&mut sb, "print(first, second, next(gen))").await,
        "0 1 4"
    );
    // Once it is gone, checkpoints work again.
    out(&mut sb, "del gen\nkeep = 5").await;
    // After a failed checkpoint the next try waits until the steps since have doubled.
    let mut taken = false;
    for _ in 0..200 {
        if common::ok(&mut sb, "keep = 5").await.checkpointed {
            taken = true;
            break;
        }
    }
    assert!(taken, "a checkpoint was taken again");
    let r = trap(&mut sb).await;
    assert!(r.from_checkpoint && r.replayed <= 1, "{r:?}");
    assert_eq!(
        out(&mut sb, "print(keep, 'gen' in globals())").await,
        "5 False"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_over_the_checkpoint_cap_falls_back_to_the_journal() {
    let mut sb = sandbox_with(
        Limits {
            max_checkpoint_bytes: 64 << 10,
            ..limits(Duration::ZERO)
        },
        Context::text("doc"),
    )
    .await;
    out(&mut sb, "big = 'x' * 100_000").await;
    let r = trap(&mut sb).await;
    assert!(!r.from_checkpoint, "{r:?}");
    assert_eq!(out(&mut sb, "print(len(big))").await, "100000");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pickling_hook_cannot_reach_the_host() {
    let host = Arc::new(EchoHost::default());
    let mut sb = Sandbox::builder(engine())
        .limits(limits(Duration::ZERO))
        .model(host.clone())
        .build()
        .await
        .unwrap();
    out(
        &mut sb,
        "class Sneaky:\n    def __reduce__(self):\n        global said\n        said = llm_query('from a hook')\n        return (int, (1,))\ns = Sneaky()",
    )
    .await;
    assert_eq!(
        host.calls.load(Ordering::SeqCst),
        0,
        "the hook's call was refused"
    );
    let said = out(&mut sb, "print(said)").await;
    assert!(said.contains("no model or tool calls"), "{said}");
    let r = trap(&mut sb).await;
    assert!(
        !r.from_checkpoint,
        "a checkpoint that called the host is not kept: {r:?}"
    );
    assert_eq!(host.calls.load(Ordering::SeqCst), 0);
    assert_eq!(out(&mut sb, "print(type(s).__name__)").await, "Sneaky");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_stopped_by_a_limit_rebuilds_the_repl_with_the_step() {
    let mut sb = sandbox().await;
    out(&mut sb, "before = 1").await;
    out(
        &mut sb,
        "class Spin:\n    def __reduce__(self):\n        while True:\n            pass\nspin = Spin()",
    )
    .await;
    // Steps that do some work, until one makes a checkpoint due (the steps since the last
    // one must take longer than it did): that checkpoint spins and is stopped by the fuel.
    let mut stopped = None;
    for i in 0..200 {
        let r = sb
            .exec(&format!(
                "after = {i}\nfor _ in range(30_000):\n    pass\nprint('ran')"
            ))
            .await
            .unwrap();
        assert_eq!(r.stdout.trim(), "ran");
        assert!(r.error.is_none() && !r.reset, "{r:?}");
        if r.recovery > Duration::ZERO {
            stopped = Some((i, r));
            break;
        }
    }
    let (i, r) = stopped.expect("a checkpoint was due and stopped");
    assert!(
        r.from_checkpoint,
        "rebuilt from the previous checkpoint: {r:?}"
    );
    // The REPL has the step whose checkpoint was stopped.
    assert_eq!(
        out(&mut sb, "print(before, after, type(spin).__name__)").await,
        format!("1 {i} Spin")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lazy_contexts_are_referred_to_not_copied() {
    let doc = "line one\nline two\n".repeat(2_000);
    let mut sb = sandbox_with(
        Limits {
            lazy_threshold_chars: 1_000,
            ..limits(Duration::ZERO)
        },
        Context::text(&doc),
    )
    .await;
    out(&mut sb, "t = context\npiece = context[10:200]\nlines = context.splitlines()\nhead = context[0:5000]").await;
    let r = trap(&mut sb).await;
    assert!(r.from_checkpoint, "{r:?}");
    assert_eq!(
        out(
            &mut sb,
            "print(t is context, type(t).__name__, len(piece), len(lines), lines[3], len(head))"
        )
        .await,
        "True LazyText 190 4000 line two 5000"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_checkpoints_a_trap_replays_the_whole_journal() {
    let mut sb = sandbox_with(limits(Duration::MAX), Context::text("doc")).await;
    for i in 0..12 {
        out(&mut sb, &format!("v{i} = {i}")).await;
    }
    let r = trap(&mut sb).await;
    assert!(!r.from_checkpoint, "{r:?}");
    assert_eq!(
        r.replayed, 13,
        "the context's attachment and the twelve steps: {r:?}"
    );
    assert_eq!(out(&mut sb, "print(v11)").await, "11");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_starts_from_the_checkpoint() {
    let mut sb = sandbox_with(
        Limits {
            standby_after: Duration::ZERO,
            ..limits(Duration::ZERO)
        },
        Context::text("doc"),
    )
    .await;
    for i in 0..30 {
        out(
            &mut sb,
            &format!("v{i} = {i}\ndef f{i}():\n    return v{i} * 2"),
        )
        .await;
    }
    assert!(sb.settle().await);
    let r = trap(&mut sb).await;
    assert_eq!(r.replayed, 0, "{r:?}");
    // The new standby, built after the swap, starts from the checkpoint too.
    out(&mut sb, "w = f29() + f3()").await;
    assert!(sb.settle().await);
    let r = trap(&mut sb).await;
    assert_eq!(r.replayed, 0, "{r:?}");
    assert_eq!(out(&mut sb, "print(w, f10())").await, "64 20");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_state_that_cannot_be_saved_gets_a_standby_once_replaying_it_costs_enough() {
    let mut sb = sandbox_with(limits(Duration::ZERO), Context::text("doc")).await;
    out(&mut sb, "gen = (i for i in range(100))").await;
    // Steps of a few milliseconds each, until replaying them would take more than 50 ms.
    for _ in 0..200 {
        if sb.has_standby() {
            break;
        }
        out(&mut sb, "n = 0\nfor _ in range(20_000):\n    n += 1").await;
    }
    assert!(sb.has_standby(), "a standby stands in for the checkpoints");
    assert!(sb.settle().await);
    let r = trap(&mut sb).await;
    assert!(r.replayed == 0 && !r.from_checkpoint, "{r:?}");
    assert_eq!(out(&mut sb, "print(next(gen), n)").await, "0 20000");
    // Once the state can be saved again, the checkpoint takes over and the standby goes.
    out(&mut sb, "del gen").await;
    // (After failures the next try waits until the steps since have doubled.)
    let mut taken = false;
    for _ in 0..200 {
        let step = "n = 0\nfor _ in range(20_000):\n    n += 1";
        if common::ok(&mut sb, step).await.checkpointed {
            taken = true;
            break;
        }
    }
    assert!(taken, "a checkpoint was taken again");
    assert!(!sb.has_standby(), "the standby was dropped");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_whose_unpickling_hook_calls_the_host_is_refused() {
    let host = Arc::new(EchoHost::default());
    let mut sb = Sandbox::builder(engine())
        .limits(limits(Duration::ZERO))
        .model(host.clone())
        .build()
        .await
        .unwrap();
    // Saving calls nothing; restoring runs __setstate__, which asks for a model call.
    out(
        &mut sb,
        "class Wake:\n    def __setstate__(self, state):\n        self.__dict__.update(state)\n        self.said = llm_query('from a hook')\nw = Wake()\nw.x = 1",
    )
    .await;
    let r = trap(&mut sb).await;
    assert!(
        !r.from_checkpoint,
        "a restore that asked for a host call is not trusted: {r:?}"
    );
    assert_eq!(
        host.calls.load(Ordering::SeqCst),
        0,
        "no model call reached the host"
    );
    assert_eq!(
        out(&mut sb, "print(w.x, hasattr(w, 'said'))").await,
        "1 False"
    );
}
