"""Figures of the installed rlm_rs wheel (`just py-bench`, part of `just bench`): import time,
the first Sandbox (guest compiled from cold, and from the cache), a 10-step session, and the DSPy
interpreter against DSPy's default (Deno + Pyodide) when Deno is at hand. Prints, asserts
nothing."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SESSION = [
    "import re, json, collections",
    "lines = context.splitlines()\nprint(len(lines))",
    "hits = [l for l in lines if 'code' in l]\nprint(len(hits))",
    "words = collections.Counter(w for l in lines for w in l.split())\nprint(words.most_common(3))",
    "m = re.search(r'access code is (\\d+)', context)\nprint(m.group(1))",
    "chunks = [context[i:i + 2000] for i in range(0, len(context), 2000)]\nprint(len(chunks))",
    "sizes = [len(c) for c in chunks]\nprint(sum(sizes), max(sizes))",
    "data = json.dumps({'n': len(lines), 'hits': len(hits)})\nprint(data)",
    "total = sum(len(w) for w in words)\nprint(total)",
    "FINAL(m.group(1))",
]
DOC = "Filler line of the document.\n" * 2000 + "The access code is 48213.\n" + "More filler.\n" * 2000


def fresh(code: str) -> float:
    """Seconds a fresh interpreter takes to run `code` (median of 5)."""
    times = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(times)


def main() -> None:
    print(f"python {sys.version.split()[0]}")
    t = fresh("import time; t = time.perf_counter(); import rlm_rs; print(time.perf_counter() - t)")
    print(f"import rlm_rs: {t * 1e3:.1f} ms")
    with tempfile.TemporaryDirectory() as cache:
        code = (
            "import time, rlm_rs; t = time.perf_counter(); "
            f"rlm_rs.Sandbox(cache_dir={cache!r}); print(time.perf_counter() - t)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        print(f"first Sandbox(), guest compiled (cold cache): {float(out.stdout.strip()):.2f} s")
        t = fresh(code)
        print(f"first Sandbox() in a process, compiled guest cached: {t * 1e3:.1f} ms")

    import rlm_rs

    rlm_rs.Sandbox()
    starts = []
    for _ in range(20):
        t = time.perf_counter()
        rlm_rs.Sandbox()
        starts.append(time.perf_counter() - t)
    print(f"later Sandbox() (engine loaded): median {statistics.median(starts) * 1e3:.2f} ms")
    sessions = []
    for _ in range(5):
        t = time.perf_counter()
        sb = rlm_rs.Sandbox(DOC)
        for step in SESSION:
            r = sb.exec(step)
            assert r.error is None, r.error
        assert r.final == "48213"
        sessions.append(time.perf_counter() - t)
    print(f"10-step session over a 90 kB text (start included): median {statistics.median(sessions) * 1e3:.1f} ms")
    dspy_figures()


def dspy_figures() -> None:
    try:
        import dspy  # noqa: F401
        from dspy.primitives.python_interpreter import PythonInterpreter
    except ImportError:
        print("dspy: not installed, skipped")
        return
    from rlm_rs.dspy import Interpreter

    steps = SESSION[:-1] + ["SUBMIT(answer=m.group(1))"]

    def session(make) -> tuple[float, float]:
        t = time.perf_counter()
        it = make()
        it.output_fields = [{"name": "answer", "type": "str"}]
        it.start()
        started = time.perf_counter() - t
        for i, step in enumerate(steps):
            out = it.execute(step, variables={"context": DOC} if i == 0 else None)
        assert getattr(out, "output", None) == {"answer": "48213"}, out
        it.shutdown()
        return started, time.perf_counter() - t

    ours = [session(Interpreter) for _ in range(5)]
    print(
        "dspy interpreter, rlm_rs: start median "
        f"{statistics.median(s for s, _ in ours) * 1e3:.1f} ms, 10-step session "
        f"{statistics.median(w for _, w in ours) * 1e3:.1f} ms"
    )
    deno = shutil.which("deno", path=os.path.dirname(sys.executable)) or shutil.which("deno")
    if deno is None:
        print("dspy interpreter, default (Deno + Pyodide): no deno (pip install deno), skipped")
        return
    # DSPy's runner as shipped, but with its one deno.land import served from a local file.
    import dspy.primitives as primitives

    work = tempfile.mkdtemp()
    source = Path(primitives.__file__).with_name("runner.js").read_text()
    remote = 'from "https://deno.land/std@0.186.0/io/mod.ts"'
    if remote not in source:
        print("dspy interpreter, default: its runner's imports changed, skipped")
        return
    shutil.copy(Path(__file__).with_name("read_lines.js"), Path(work) / "read_lines.js")
    runner = Path(work) / "runner.js"
    runner.write_text(source.replace(remote, 'from "./read_lines.js"'))
    cmd = [deno, "run", "--no-config", "--no-lock", "--node-modules-dir=false", "-A", str(runner)]
    try:
        warm = PythonInterpreter(deno_command=cmd)
        warm.execute("print(1)")  # fetches Pyodide from npm into Deno's cache, once
        warm.shutdown()
    except Exception as e:  # no npm registry, no Pyodide: no comparison
        print(f"dspy interpreter, default (Deno + Pyodide): could not start ({e}), skipped")
        return
    theirs = [session(lambda: PythonInterpreter(deno_command=cmd)) for _ in range(3)]
    print(
        "dspy interpreter, default (Deno + Pyodide): start median "
        f"{statistics.median(s for s, _ in theirs) * 1e3:.1f} ms, 10-step session "
        f"{statistics.median(w for _, w in theirs) * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
