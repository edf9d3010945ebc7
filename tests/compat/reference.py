#!/usr/bin/env python3
"""Reference run of one compatibility-corpus trajectory in native CPython (stdlib only).

It emulates the REPLs the corpus was written for (the official `rlms`, DSPy's RLM, fast-rlm):
one persistent globals dict; `context` (and `context_0`) a real `str`, or a list of `str`;
every input name bound; `llm_query`/`rlm_query` answering a deterministic stub; the batched
names; `SUBMIT`, `FINAL`, `FINAL_VAR`, `SHOW_VARS`, the `answer` dict; top-level `await`
(fast-rlm runs code with Pyodide's `runPythonAsync`); a trailing bare expression echoed like a
notebook; the scaffold put back after every block (as the official rlm does).

Third-party packages are absent here as they are in our sandbox (an import of a module outside
`sys.stdlib_module_names` raises ModuleNotFoundError), so both runs keep the same state after
such a block. The modules our REPL binds without an import are bound here too, for the same
reason: a block that forgets `import re` must not make the two runs drift apart.

Input: one JSON job on stdin:
    {"context_path": "...", "context_kind": "text" | "list", "inputs": ["context", "query"],
     "question": "...", "blocks": ["code", ...]}
For "list", the file holds a JSON array of strings; for "text", the text itself (UTF-8).

Output: a first line {"python": "3.x.y", "stdlib_module_names": [...]}, then one JSON line per
block: {"error_type": "NameError" | null, "error": "short message" | null}.
"""

import ast
import asyncio
import builtins
import importlib.abc
import io
import json
import signal
import sys

# Names that hold the question rather than the document (DSPy signature fields).
QUESTION_NAMES = {"query", "question", "focus"}

# Modules our REPL binds without an import (`PREBOUND` in guest/app/rlm_guest.py).
PREBOUND = (
    "re", "json", "math", "collections", "itertools", "functools", "statistics", "string",
    "textwrap", "datetime", "random", "heapq", "bisect", "difflib", "csv", "io", "time",
    "hashlib", "base64", "unicodedata", "operator", "copy", "pprint", "typing",
)

# Seconds one block may run here before it is reported as a timeout.
BLOCK_SECONDS = 60


def stub_answer(prompt):
    """The sub-model's answer; the Rust harness's model host answers exactly the same."""
    return "stub answer (" + str(len(prompt)) + " chars)"


class Reply(str):
    """An answer that is also awaitable (fast-rlm's `llm_query` is async)."""

    __slots__ = ()

    def __await__(self):
        return str(self)
        yield  # noqa: unreachable - makes this a generator


class Replies(list):
    """A batch of answers that is also awaitable."""

    __slots__ = ()

    def __await__(self):
        return list(self)
        yield  # noqa: unreachable - makes this a generator


class NoThirdParty(importlib.abc.MetaPathFinder):
    """Refuse every module outside the standard library, as the sandbox does."""

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.partition(".")[0]
        if top in sys.stdlib_module_names or top in sys.builtin_module_names:
            return None
        raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)


class BlockTimeout(Exception):
    pass


def on_alarm(signum, frame):
    raise BlockTimeout(f"the block ran longer than {BLOCK_SECONDS} s natively")


class Repl:
    def __init__(self, context, inputs, question):
        self.g = {"__name__": "__main__", "__builtins__": builtins}
        self.finished = None
        for name in PREBOUND:
            self.g[name] = __import__(name)
        self.g["context"] = context
        self.g["context_0"] = context
        for name in inputs:
            self.g[name] = question if name in QUESTION_NAMES else context
        self.scaffold = {
            "llm_query": self.llm_query,
            "rlm_query": self.llm_query,
            "llm_query_batched": self.batched,
            "rlm_query_batched": self.batched,
            "llm_batch": self.batched,
            "rlm_batch": self.batched,
            "SUBMIT": self.submit,
            "FINAL": self.final,
            "FINAL_VAR": self.final_var,
            "SHOW_VARS": self.show_vars,
        }
        self.builtins = dict(vars(builtins))
        self.g["answer"] = {"content": "", "ready": False}
        self.restore()
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)

    # --- the names model code calls ---

    def llm_query(self, prompt, model=None):
        return Reply(stub_answer(str(prompt)))

    def batched(self, prompts, model=None):
        if isinstance(prompts, str):
            raise TypeError("the batched calls take a list of prompts")
        return Replies(self.llm_query(p, model) for p in prompts)

    def submit(self, *args, **fields):
        self.finished = (args, fields)

    def final(self, answer):
        self.finished = answer
        return answer

    def final_var(self, name):
        if isinstance(name, str):
            key = name.strip().strip("'\"")
            if key not in self.g:
                return f"Error: Variable '{key}' not found"
            name = self.g[key]
        self.finished = name
        return str(name)

    def show_vars(self):
        rows = []
        for k, v in self.g.items():
            if k.startswith("_") or k in self.scaffold or type(v).__name__ == "module":
                continue
            rows.append(f"{k}: {type(v).__name__}")
        return "\n".join(rows)

    def restore(self):
        """Put the scaffold back, as the official rlm does after each cell."""
        self.g.update(self.scaffold)
        self.g["__builtins__"] = builtins
        b = vars(builtins)
        for k, v in self.builtins.items():
            if b.get(k) is not v:
                b[k] = v
        if "print" in self.g and self.g["print"] is not print:
            del self.g["print"]
        if "answer" not in self.g:
            self.g["answer"] = {"content": "", "ready": False}

    # --- running a block ---

    def run_code(self, code_obj):
        result = eval(code_obj, self.g)
        if asyncio.iscoroutine(result):
            result = self.loop.run_until_complete(result)
        return result

    def run(self, code):
        flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        filename = "<block>"
        saved = (sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
        signal.alarm(BLOCK_SECONDS)
        try:
            tree = compile(code, filename, "exec", ast.PyCF_ONLY_AST | flags)
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            self.run_code(compile(tree, filename, "exec", flags))
            if last is not None:
                value = self.run_code(compile(last, filename, "eval", flags))
                if value is not None:
                    self.g["_"] = value
                    print(repr(value))
            return None
        except SystemExit as e:
            if e.code in (None, 0):
                return None
            return e
        except BaseException as e:  # noqa: BLE001 - model code may raise anything
            return e
        finally:
            signal.alarm(0)
            sys.stdout, sys.stderr = saved
            self.restore()


def short(e):
    text = str(e).strip().splitlines()
    msg = text[0] if text else ""
    if len(msg) > 200:
        msg = msg[:200] + "..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def main():
    job = json.load(sys.stdin)
    with open(job["context_path"], encoding="utf-8") as f:
        raw = f.read()
    context = json.loads(raw) if job["context_kind"] == "list" else raw
    del raw
    out = sys.stdout
    out.write(
        json.dumps(
            {
                "python": sys.version.split()[0],
                "stdlib_module_names": sorted(sys.stdlib_module_names),
            }
        )
        + "\n"
    )
    out.flush()
    sys.meta_path.insert(0, NoThirdParty())
    signal.signal(signal.SIGALRM, on_alarm)
    repl = Repl(context, job.get("inputs") or [], job.get("question") or "")
    for code in job["blocks"]:
        if not isinstance(code, str):
            code = ""
        err = repl.run(code)
        line = {"error_type": None, "error": None}
        if err is not None:
            line = {"error_type": type(err).__name__, "error": short(err)}
        out.write(json.dumps(line) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
