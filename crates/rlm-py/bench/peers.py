"""Peer sandboxes, measured side by side (`just peer-bench`), so `just bench` can print their
figures next to ours.

Peers: Monty (`pydantic-monty`, Pydantic's Rust Python interpreter, run in a pool of worker
processes), the official RLM's `LocalREPL` (`rlms`, exec() in the host process), and eryx
(`pyeryx`, CPython compiled to wasm, run in wasmtime). For each peer that imports:

- process start to the result of `1+1`: spawn `python -c` that imports the peer, makes its
  sandbox/REPL and runs `1+1` (median of 5; the clock stops when the result is in hand, read
  from the system-wide monotonic clock in the child, so interpreter shutdown is not counted);
- a step `x = 1` in a live session (p50 of 200);
- a new REPL with a small `context` string bound, created and closed (p50 of 50): binding
  takes one round trip where the peer has no constructor argument for it (Monty: a first feed
  with `inputs=`; eryx: an assignment);
- the 10 AGENT_BLOCKS below as separate steps in a new session, start and close included
  (p50 of 20);
- a CPU-bound step, 10**6 additions in a Python loop (median of 5), plus plain CPython
  in-process for reference;
- with PEERS_BIG=1 only (needs ~3 GB of RAM): the official RLM's LocalREPL given a 1 GiB
  context, seconds to the first `len(context)` output and the child process's peak RSS.

Each peer, and each measurement, is tried on its own: one that fails prints one line and the
script goes on. Anything not measured is printed with its earlier figure, labelled as such.
Prints a markdown table; asserts nothing, always exits 0.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from importlib import metadata
from collections.abc import Callable
from typing import Any

AGENT_BLOCKS = [
    "import re\nimport json",
    "lines = context.splitlines()\nn = len(lines)",
    "def words(s):\n    return s.split()",
    "counts = {}\nfor l in lines:\n    for w in words(l):\n        counts[w] = counts.get(w, 0) + 1",
    "top = sorted(counts.items(), key=lambda kv: -kv[1])[:5]",
    "m = re.search(r'code (\\d+)', context)",
    "found = m.group(1) if m else None",
    "data = json.dumps({'n': n, 'top': top})",
    "summary = f'{n} lines, code {found}'",
    "print(summary)",
]
CONTEXT = "The access code 4217 is here.\nsmall doc line two\n"
EXPECTED_SUMMARY = "2 lines, code 4217"  # what the last agent block prints
CPU_LOOP = "s = 0\nfor i in range(10**6):\n    s += i"

# The rows of the table, in print order.
W_SPAWN = "process start → result of `1+1` (median of 5)"
W_STEP = "step `x = 1` in a live session (p50 of 200)"
W_NEW = "new REPL with `context` bound, created and closed (p50 of 50)"
W_AGENT = "10 agent blocks in a new session, start included (p50 of 20)"
W_CPU = "CPU step: 10**6 additions in a loop (median of 5)"
W_TRAP = "recovery after a trap"
W_BIG = "1 GiB context → first `len(context)` output (s, peak RSS)"
WHATS = [W_SPAWN, W_STEP, W_NEW, W_AGENT, W_CPU, W_TRAP, W_BIG]

MONTY, RLM, ERYX = "Monty", "official rlm", "eryx"
NOT_HERE = "(earlier, not measured here)"

# Earlier figures, printed only for what this run did not measure: (what, peer) -> figure.
EARLIER: dict[tuple[str, str], str] = {
    (W_SPAWN, MONTY): "79 ms",
    (W_SPAWN, ERYX): "112 ms",
    (W_SPAWN, RLM): "97 ms",
    (W_STEP, MONTY): "0.080 ms",
    (W_STEP, ERYX): "0.093 ms",
    (W_NEW, MONTY): "0.066 ms (warm pool)",
    (W_NEW, ERYX): "0.29 ms",
    (W_AGENT, MONTY): "0.54–0.84 ms",
    (W_AGENT, ERYX): "1.0–1.46 ms",
    (W_CPU, "CPython"): "46 ms",
    (W_CPU, MONTY): "51 ms",
    (W_CPU, ERYX): "243 ms",
    (W_BIG, RLM): "3.58 s, 3098 MiB",
    (W_BIG, ERYX): "1.59 s, 2162 MiB",
}
# Figures this script never measures; always printed, labelled.
ALWAYS_EARLIER = [
    (W_CPU, "Pyodide", f"101 ms {NOT_HERE}"),
    (W_TRAP, MONTY, "0.3 ms (published, not measured here)"),
]

rows: dict[str, list[tuple[str, str]]] = {w: [] for w in WHATS}


def add(what: str, peer: str, figure: str) -> None:
    rows[what].append((peer, figure))


def add_earlier(what: str, peer: str, label: str, why: str = "") -> None:
    """The earlier figure for (what, peer), if there is one, marked as not measured."""
    earlier = EARLIER.get((what, peer))
    figure = f"{earlier} {NOT_HERE}" if earlier else "not measured, no earlier figure"
    add(what, label, figure + (f"; {why}" if why else ""))


def sig3(x: float) -> str:
    """`x` to 3 significant digits, without exponent notation."""
    if x == 0 or not math.isfinite(x):
        return str(x)
    decimals = 2 - math.floor(math.log10(abs(x)))
    x = round(x, decimals)
    return f"{x:.{decimals}f}" if decimals > 0 else str(int(x))


def ms(seconds: float) -> str:
    return f"{sig3(seconds * 1e3)} ms"


def p50(fn: Callable[[], Any], runs: int, warmup: int = 3) -> float:
    """Median seconds of `runs` calls of `fn`, after `warmup` uncounted ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def spawn_to_result(src: str, runs: int = 5) -> tuple[float, str]:
    """Median seconds from spawning `python -c src` to the moment it holds its result.

    The child prints `<result> <time.monotonic()>` on its last line; time.monotonic() reads the
    system-wide monotonic clock (CLOCK_MONOTONIC on Linux), so it is comparable across processes.
    """
    times, result = [], ""
    for _ in range(runs):
        t0 = time.monotonic()
        out = subprocess.run(
            [sys.executable, "-c", src], capture_output=True, text=True, timeout=120
        )
        if out.returncode != 0:
            raise RuntimeError(f"child exited {out.returncode}: {out.stderr.strip()[-300:]}")
        result, stamp = out.stdout.strip().splitlines()[-1].rsplit(" ", 1)
        times.append(float(stamp) - t0)
    return statistics.median(times), result


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


# --------------------------------------------------------------------------------------------
# The peers. Each adapter gives one way to open a session with `context` bound, run a step in
# it (returning what it printed, raising on an error), and close it; plus a child program for
# the process-start figure.
# --------------------------------------------------------------------------------------------


class MontyPeer:
    """pydantic-monty 1.x: `Monty()` is a pool of `monty` worker subprocesses (spawned by `with`,
    `min_processes` kept warm); `pool.checkout()` dedicates one worker to a REPL session whose
    globals persist across `feed_run` calls and are reset when the session goes back to the pool.
    Its fastest documented new REPL is therefore a checkout from a warm pool. `inputs=` binds host
    values as globals (they persist for the session's later feeds)."""

    name = MONTY
    dist = "pydantic-monty-client"
    how_new = "checkout from a warm `Monty()` pool; context via `inputs=`"
    spawn_src = (
        "import time\n"
        "from pydantic_monty import Monty\n"
        "with Monty() as pool, pool.checkout() as s:\n"
        "    r = s.feed_run('1+1')\n"
        "    print(r, time.monotonic())\n"
    )

    def __init__(self) -> None:
        import pydantic_monty

        self.m = pydantic_monty
        self.pool = pydantic_monty.Monty(min_processes=1)
        self.pool.__enter__()

    def open(self, context: str) -> Any:
        s = self.pool.checkout()
        s.__enter__()
        s.feed_run("len(context)", inputs={"context": context})
        return s

    def step(self, s: Any, code: str) -> str:
        out = self.m.CollectString()  # keep the sandbox's print() off our stdout
        s.feed_run(code, print_callback=out)
        return out.output

    def close(self, s: Any) -> None:
        s.__exit__(None, None, None)

    def shutdown(self) -> None:
        self.pool.__exit__(None, None, None)


class RlmPeer:
    """rlms (alexzhang13/rlm): `LocalREPL` exec()s each block in the host process, in a persistent
    namespace with a restricted `__builtins__`; `context_payload=` is written to a temp file and
    read back as `context`. Errors do not raise: they come back in `REPLResult.stderr`."""

    name = RLM
    dist = "rlms"
    how_new = "`LocalREPL(context_payload=...)`, then `cleanup()`"
    spawn_src = (
        "import time\n"
        "from rlm.environments import LocalREPL\n"
        "r = LocalREPL()\n"
        "out = r.execute_code('print(1+1)').stdout.strip()\n"
        "print(out, time.monotonic())\n"
        "r.cleanup()\n"
    )

    def __init__(self) -> None:
        from rlm.environments import LocalREPL

        self.cls = LocalREPL

    def open(self, context: str) -> Any:
        return self.cls(context_payload=context)

    def step(self, repl: Any, code: str) -> str:
        result = repl.execute_code(code)
        if result.stderr:
            raise RuntimeError(result.stderr.strip())
        return result.stdout

    def close(self, repl: Any) -> None:
        repl.cleanup()

    def shutdown(self) -> None:
        pass


class EryxPeer:
    """pyeryx (the `eryx` module; not the unrelated PyPI package `eryx`): CPython compiled to
    wasm, run by wasmtime in-process. `eryx.Session()` is a REPL whose state persists across
    `execute()` calls; it has no inputs, so `context` is bound by executing an assignment. Its
    wheels are cp312-abi3, so it needs Python >= 3.12."""

    name = ERYX
    dist = "pyeryx"
    how_new = "`eryx.Session()`, context bound by an assignment"
    spawn_src = (
        "import time, eryx\n"
        "s = eryx.Session()\n"
        "out = s.execute('print(1+1)').stdout_text.strip()\n"
        "print(out, time.monotonic())\n"
    )

    def __init__(self) -> None:
        try:
            import eryx
        except ImportError:
            if sys.version_info < (3, 12):
                raise ImportError("pyeryx has only cp312-abi3 wheels; it needs Python >= 3.12")
            raise
        if not hasattr(eryx, "Session"):
            raise ImportError("the installed `eryx` is not pyeryx (the wasm sandbox)")
        self.m = eryx
        self.m.Session().execute("pass")  # load the runtime once, outside the timings

    def open(self, context: str) -> Any:
        s = self.m.Session()
        s.execute(f"context = {context!r}")
        return s

    def step(self, s: Any, code: str) -> str:
        return s.execute(code).stdout_text

    def close(self, s: Any) -> None:
        pass  # dropped with its last reference

    def shutdown(self) -> None:
        pass


def try_measure(what: str, peer: str, label: str, fn: Callable[[], str]) -> None:
    """Add the row `fn` measures; on a failure, say so and add the earlier figure instead."""
    try:
        add(what, label, fn())
    except Exception as e:  # noqa: BLE001 - a peer failing is a result, not our error
        print(f"{peer}: {what}: failed ({type(e).__name__}: {str(e)[:200]})")
        add_earlier(what, peer, label, "failed here")


def bench_peer(cls: type) -> None:
    """All the figures of one peer; on an import failure, its earlier figures."""
    label = f"{cls.name} {version(cls.dist)}"
    try:
        peer = cls()
    except Exception as e:  # noqa: BLE001
        print(f"{cls.name}: not available ({type(e).__name__}: {e}); its earlier figures follow")
        for what in (W_SPAWN, W_STEP, W_NEW, W_AGENT, W_CPU):
            add_earlier(what, cls.name, cls.name)
        return

    def spawn() -> str:
        seconds, result = spawn_to_result(cls.spawn_src)
        return ms(seconds) + ("" if result == "2" else f" (child printed {result!r}, not 2)")

    def step() -> str:
        s = peer.open(CONTEXT)
        try:
            return ms(p50(lambda: peer.step(s, "x = 1"), 200, warmup=10))
        finally:
            peer.close(s)

    def new_repl() -> str:
        return ms(p50(lambda: peer.close(peer.open(CONTEXT)), 50))

    outputs: list[str] = []

    def agent_session() -> None:
        s = peer.open(CONTEXT)
        try:
            outputs.append("".join(peer.step(s, block) for block in AGENT_BLOCKS))
        finally:
            peer.close(s)

    def agent() -> str:
        t = p50(agent_session, 20, warmup=2)
        last = outputs[-1].strip()
        wrong = f" (printed {last!r}, expected {EXPECTED_SUMMARY!r})"
        return ms(t) + ("" if last == EXPECTED_SUMMARY else wrong)

    def cpu() -> str:
        s = peer.open(CONTEXT)
        try:
            return ms(p50(lambda: peer.step(s, CPU_LOOP), 5, warmup=1))
        finally:
            peer.close(s)

    try_measure(W_SPAWN, cls.name, label, spawn)
    try_measure(W_STEP, cls.name, label, step)
    try_measure(W_NEW, cls.name, f"{label} ({cls.how_new})", new_repl)
    try_measure(W_AGENT, cls.name, f"{label} (10 separate steps)", agent)
    try_measure(W_CPU, cls.name, label, cpu)
    try:
        peer.shutdown()
    except Exception as e:  # noqa: BLE001
        print(f"{cls.name}: shutdown failed ({type(e).__name__}: {e})")


def cpython_reference() -> None:
    """The CPU step and process start in plain CPython, no sandbox, for reference."""
    code = compile(CPU_LOOP, "<cpu>", "exec")
    try_measure(W_CPU, "CPython", "CPython (in-process exec, reference)",
                lambda: ms(p50(lambda: exec(code, {}), 5, warmup=1)))
    src = "import time; r = 1+1; print(r, time.monotonic())"
    try_measure(W_SPAWN, "CPython", "CPython (`python -c`, no sandbox, reference)",
                lambda: ms(spawn_to_result(src)[0]))


# The child for the 1 GiB figure: builds exactly 2**30 ASCII characters of 70-character lines
# (a 65,536-character block of 936 such lines and one short one, repeated 16,384 times), then
# times LocalREPL(context_payload=text) through the first `print(len(context))`.
BIG_SRC = r"""
import time
from rlm.environments import LocalREPL
lines = [f"line {i:06d}: lorem ipsum dolor sit amet, consectetur adipiscing elit sed do"[:69]
         for i in range(936)]
block = "\n".join(lines) + "\n"
block += "x" * (65536 - len(block) - 1) + "\n"
text = block * 16384
t = time.monotonic()
repl = LocalREPL(context_payload=text)
out = repl.execute_code("print(len(context))").stdout.strip()
print(out, time.monotonic() - t)
repl.cleanup()
"""


def big_context() -> None:
    """The official rlm's LocalREPL with a 1 GiB context, in its own subprocess (PEERS_BIG=1)."""
    label = f"{RLM} {version('rlms')} (`LocalREPL`)"
    if os.environ.get("PEERS_BIG") != "1":
        print("1 GiB context: skipped (needs ~3 GB of RAM); set PEERS_BIG=1 to measure it")
        add_earlier(W_BIG, RLM, RLM)
        add_earlier(W_BIG, ERYX, ERYX)
        return
    try:
        out = subprocess.run(
            [sys.executable, "-c", BIG_SRC], capture_output=True, text=True, timeout=600
        )
        if out.returncode != 0:
            raise RuntimeError(f"child exited {out.returncode}: {out.stderr.strip()[-300:]}")
        # Peak RSS of the largest child waited for so far: this one, by far.
        maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        mib = maxrss / 2**20 if sys.platform == "darwin" else maxrss / 2**10  # bytes / KiB
        length, seconds = out.stdout.strip().splitlines()[-1].split()
        note = "" if length == str(2**30) else f" (printed {length}, expected {2**30})"
        add(W_BIG, label, f"{sig3(float(seconds))} s, {mib:.0f} MiB peak RSS{note}")
    except Exception as e:  # noqa: BLE001
        print(f"{RLM}: 1 GiB context: failed ({type(e).__name__}: {str(e)[:200]})")
        add_earlier(W_BIG, RLM, label, "failed here")
    add_earlier(W_BIG, ERYX, ERYX)


def main() -> None:
    started = time.perf_counter()
    print(f"peer sandboxes: python {platform.python_version()} ({sys.executable}), "
          f"{platform.machine()}, {os.cpu_count()} CPUs")
    cpython_reference()
    for cls in (MontyPeer, RlmPeer, EryxPeer):
        bench_peer(cls)
    big_context()
    for what, peer, figure in ALWAYS_EARLIER:
        add(what, peer, figure)

    print()
    print("| what | peer | figure |")
    print("| --- | --- | --- |")
    for what in WHATS:
        for peer, figure in rows[what]:
            print(f"| {what} | {peer} | {figure} |")
    print(f"\n(peer-bench took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - prints, asserts nothing, always exits 0
        print(f"peers.py: stopped early ({type(e).__name__}: {e})")
    sys.exit(0)
