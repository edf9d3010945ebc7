"""The rlm guest: a persistent Python REPL that runs inside a wasmtime sandbox.

This module is compiled by componentize-py into a WebAssembly component that exports the
`repl` interface of `../wit/sandbox.wit`. It runs untrusted model code, one step at a time, in one
globals dict that persists across steps.

Names the model sees
--------------------
context                    the document (a `str`, a list of documents, or parsed JSON). Above the
                           lazy threshold it is a lazy object served by the host (see LazyText).
context_1, context_2, ...  later contexts of a multi-turn session.
llm_query(prompt, model=None)   one sub-LLM call; returns the answer, or an "Error: ..." string.
llm_batch(prompts, model=None)  concurrent sub-LLM calls; a list of answers in prompt order (a
                           failed prompt gives an "Error: ..." string in its slot).
rlm_query(prompt, model=None)   a recursive sub-RLM with a REPL of its own (or a plain LLM call
                           at the depth limit); returns its answer or an "Error: ..." string.
search(pattern, max=100, ignore_case=False, within="context")
                           host-side regex search (Rust regex syntax, linear time); a list of
                           dicts {"start", "end", "text", "line", "path"} in character offsets.
FINAL(answer)              finish with `answer`.
FINAL_VAR(name)            finish with the value of the variable called `name`.
answer                     a dict {"content": ..., "ready": False}; set "ready" to True to finish
                           with "content".
SHOW_VARS()                list the variables defined so far.

Only the standard-library modules imported below (PREIMPORTED) exist inside the sandbox: the
component has no files at run time, so a module must be imported while it is built.
"""

import ast
import builtins
import importlib
import io
import json
import linecache
import os
import sys
import traceback

# Every module here is imported at build time and snapshotted into the component. Model code can
# import exactly these (plus the interpreter's built-in C modules). Keep the list explicit: the
# host's tests import each one inside the sandbox.
PREIMPORTED = (
    "abc", "array", "ast", "base64", "binascii", "bisect", "calendar", "cmath", "codecs",
    "collections", "collections.abc", "colorsys", "contextlib", "copy", "csv", "dataclasses",
    "datetime", "decimal", "difflib", "enum", "errno", "fnmatch", "fractions", "functools",
    "gc", "graphlib", "hashlib", "heapq", "hmac", "html", "html.parser", "io", "itertools",
    "json", "keyword", "linecache", "locale", "math", "numbers", "operator", "os", "pprint",
    "random", "re", "reprlib", "secrets", "shlex", "statistics", "string", "struct",
    "textwrap", "time", "traceback", "types", "typing", "unicodedata", "urllib",
    "urllib.parse", "uuid", "warnings", "weakref", "zlib",
)

for _name in PREIMPORTED:
    importlib.import_module(_name)

from componentize_py_types import Err  # noqa: E402
from wit_world import exports  # noqa: E402
from wit_world.exports import repl as _repl  # noqa: E402
from wit_world.imports import context as _ctx  # noqa: E402
from wit_world.imports import llm as _llm  # noqa: E402

_STEP_PREFIX = "<step "


class _Settings:
    """Values the host passes to `init`."""

    lazy_threshold = 8 * 1024 * 1024
    max_output_bytes = 256 * 1024
    read_chunk = 1024 * 1024


_settings = _Settings()


def _clean(s):
    """Return `s` as a string the component ABI can carry (lone surrogates replaced)."""
    if not isinstance(s, str):
        s = str(s)
    if s.isascii():
        return s
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8")


def _host(call, *args):
    """Call a host import, turning its error string into a Python exception the model can read."""
    try:
        return call(*args)
    except Err as e:
        raise RuntimeError(str(e.value)) from None


# --------------------------------------------------------------------------------------------
# Output capture
# --------------------------------------------------------------------------------------------


class _CappedStream(io.TextIOBase):
    """A text stream that keeps at most `cap` bytes of UTF-8 and counts the rest."""

    def __init__(self, cap):
        self._cap = cap
        self._parts = []
        self._kept = 0
        self.dropped = 0

    def writable(self):
        return True

    def isatty(self):
        return False

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        n = len(s) if s.isascii() else len(s.encode("utf-8", "surrogatepass"))
        room = self._cap - self._kept
        if n <= room:
            self._parts.append(s)
            self._kept += n
        else:
            if room > 0:
                head = s.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
                took = len(head.encode("utf-8", "surrogatepass"))
                self._parts.append(head)
                self._kept += took
                self.dropped += n - took
            else:
                self.dropped += n
        return len(s)

    def flush(self):
        pass

    def getvalue(self):
        return _clean("".join(self._parts))


# --------------------------------------------------------------------------------------------
# The context: real Python objects when small, lazy host-backed objects when large
# --------------------------------------------------------------------------------------------


def _read_text(node, start, end):
    """Read characters start..end of a text node, in chunks the host will accept."""
    step = max(1, _settings.read_chunk)
    if end - start <= step:
        return _host(_ctx.read, node, start, end)
    parts = []
    pos = start
    while pos < end:
        nxt = min(end, pos + step)
        parts.append(_host(_ctx.read, node, pos, nxt))
        pos = nxt
    return "".join(parts)


def _materialize(node):
    """The Python value of a context node: real if it fits under the threshold, lazy otherwise."""
    info = _host(_ctx.info, node)
    kind = info.kind
    if kind == _ctx.NodeKind.TEXT:
        if info.size_chars <= _settings.lazy_threshold:
            return _read_text(node, 0, info.len)
        return LazyText(node, 0, info.len)
    if info.size_chars <= _settings.lazy_threshold:
        return json.loads(_host(_ctx.to_json, node))
    if kind == _ctx.NodeKind.SEQUENCE:
        return LazyList(node, info.len)
    if kind == _ctx.NodeKind.MAPPING:
        return LazyDict(node, info.len)
    return json.loads(_host(_ctx.to_json, node))


def _too_big(what, n, use):
    return MemoryError(
        f"{what} has {n:,} characters, more than the sandbox loads at once "
        f"({_settings.lazy_threshold:,}); {use}"
    )


class LazyText:
    """A large text that stays on the host, with the common read-only `str` surface.

    len(), slicing (small slices are real `str`; large ones stay lazy), `in`, find, rfind, index,
    rindex, count, startswith, endswith, split/rsplit with maxsplit, iteration, and chunked helpers
    (chunks, iter_lines, iter_split). Offsets are characters, as for `str`. Other `str` methods are
    not available on the whole text: slice it first, or use search().
    """

    __slots__ = ("_node", "_start", "_end")

    def __init__(self, node, start, end):
        self._node = node
        self._start = start
        self._end = end

    # -- size and display ----------------------------------------------------------------
    def __len__(self):
        return self._end - self._start

    def __bool__(self):
        return self._end > self._start

    def __repr__(self):
        head = _read_text(self._node, self._start, min(self._end, self._start + 80))
        return f"<lazy text: {len(self):,} characters, starting {head!r}...>"

    def __str__(self):
        if len(self) <= _settings.lazy_threshold:
            return _read_text(self._node, self._start, self._end)
        raise _too_big(
            "This text",
            len(self),
            "work on slices (text[a:b]), or use find/count/search/iter_lines/chunks.",
        )

    def __getattr__(self, name):
        if hasattr(str, name):
            raise AttributeError(
                f"str.{name}() is not available on a lazy text of {len(self):,} characters "
                f"(above the {_settings.lazy_threshold:,}-character load limit). Call it on a "
                f"slice, e.g. context[a:b].{name}(...), or use find/count/search/iter_lines/chunks."
            )
        raise AttributeError(f"'LazyText' object has no attribute {name!r}")

    # -- positions -----------------------------------------------------------------------
    def _bounds(self, start, end):
        n = len(self)
        start, end, _ = slice(start, end).indices(n)
        return self._start + start, self._start + max(start, end)

    def __getitem__(self, key):
        n = len(self)
        if isinstance(key, slice):
            a, b, step = key.indices(n)
            if step == 1:
                if b <= a:
                    return ""
                if b - a <= _settings.lazy_threshold:
                    return _read_text(self._node, self._start + a, self._start + b)
                return LazyText(self._node, self._start + a, self._start + b)
            r = range(a, b, step)
            if not r:
                return ""
            if len(r) > _settings.lazy_threshold:
                raise _too_big("This slice", len(r), "take a smaller range.")
            lo, hi = min(r[0], r[-1]), max(r[0], r[-1]) + 1
            if hi - lo <= _settings.lazy_threshold:
                piece = _read_text(self._node, self._start + lo, self._start + hi)
                return piece[a - lo : (b - lo if b - lo >= 0 else None) : step]
            # A wide span: gather every k-th character chunk by chunk, in ascending order.
            k = abs(step)
            size = max(k, (_settings.read_chunk // k) * k)
            pos, last, parts = lo, hi - 1, []
            while pos <= last:
                end = min(last + 1, pos + size)
                parts.append(_read_text(self._node, self._start + pos, self._start + end)[::k])
                pos += size
            joined = "".join(parts)
            return joined if step > 0 else joined[::-1]
        if not isinstance(key, int):
            raise TypeError(f"string indices must be integers or slices, not {type(key).__name__}")
        i = key + n if key < 0 else key
        if not 0 <= i < n:
            raise IndexError("string index out of range")
        return _host(_ctx.read, self._node, self._start + i, self._start + i + 1)

    def _find(self, sub, start, end, reverse):
        if not isinstance(sub, str):
            raise TypeError(f"must be str, not {type(sub).__name__}")
        a, b = self._bounds(start, end)
        pos = _host(_ctx.find, self._node, _clean(sub), a, b, reverse)
        return pos if pos < 0 else pos - self._start

    def find(self, sub, start=None, end=None):
        return self._find(sub, start, end, False)

    def rfind(self, sub, start=None, end=None):
        return self._find(sub, start, end, True)

    def index(self, sub, start=None, end=None):
        pos = self._find(sub, start, end, False)
        if pos < 0:
            raise ValueError("substring not found")
        return pos

    def rindex(self, sub, start=None, end=None):
        pos = self._find(sub, start, end, True)
        if pos < 0:
            raise ValueError("substring not found")
        return pos

    def count(self, sub, start=None, end=None):
        if not isinstance(sub, str):
            raise TypeError(f"must be str, not {type(sub).__name__}")
        a, b = self._bounds(start, end)
        return _host(_ctx.count, self._node, _clean(sub), a, b)

    def __contains__(self, sub):
        return self._find(sub, None, None, False) >= 0

    def _affix(self, affix, start, end, at_end):
        a, b = self._bounds(start, end)
        options = affix if isinstance(affix, tuple) else (affix,)
        for opt in options:
            if not isinstance(opt, str):
                raise TypeError(f"expected str, not {type(opt).__name__}")
            if len(opt) > b - a:
                continue
            lo, hi = (b - len(opt), b) if at_end else (a, a + len(opt))
            if _read_text(self._node, lo, hi) == opt:
                return True
        return False

    def startswith(self, prefix, start=None, end=None):
        return self._affix(prefix, start, end, False)

    def endswith(self, suffix, start=None, end=None):
        return self._affix(suffix, start, end, True)

    def __eq__(self, other):
        if isinstance(other, LazyText):
            if len(other) != len(self):
                return False
            return all(x == y for x, y in zip(self.chunks(), other.chunks()))
        if isinstance(other, str):
            if len(other) != len(self):
                return False
            step = _settings.read_chunk
            return all(
                chunk == other[i * step : (i + 1) * step] for i, chunk in enumerate(self.chunks())
            )
        return NotImplemented

    __hash__ = None

    def __add__(self, other):
        raise _too_big("This text", len(self), "concatenate slices of it instead.")

    __radd__ = __add__

    # -- iteration -----------------------------------------------------------------------
    def chunks(self, size=None, overlap=0):
        """Yield the text as consecutive `str` pieces of `size` characters (the last shorter),
        each starting `overlap` characters before the end of the previous one."""
        size = _settings.read_chunk if size is None else int(size)
        if size <= 0 or overlap < 0 or overlap >= size:
            raise ValueError("need size > 0 and 0 <= overlap < size")
        pos = self._start
        while pos < self._end:
            nxt = min(self._end, pos + size)
            yield _read_text(self._node, pos, nxt)
            if nxt >= self._end:
                break
            pos = nxt - overlap

    def __iter__(self):
        for chunk in self.chunks():
            yield from chunk

    def iter_lines(self, keepends=False):
        """Yield the lines of the text one at a time, as str.splitlines() would give them."""
        carry = ""
        for chunk in self.chunks():
            lines = (carry + chunk).splitlines(True)
            carry = ""
            if lines:
                last = lines[-1]
                # An unterminated last line, or one ending in '\r' (maybe half of '\r\n'),
                # continues in the next chunk.
                if len(last.splitlines()[0]) == len(last) or last.endswith("\r"):
                    carry = lines.pop()
            for line in lines:
                yield line if keepends else line.splitlines()[0]
        if carry:
            yield carry if keepends else carry.splitlines()[0]

    def iter_split(self, sep):
        """Yield the pieces of text.split(sep) one at a time (sep must be a non-empty str)."""
        if not isinstance(sep, str) or not sep:
            raise ValueError("iter_split needs a non-empty separator string")
        pos = 0
        n = len(self)
        while True:
            hit = self._find(sep, pos, None, False)
            if hit < 0:
                yield self[pos:n]
                return
            yield self[pos:hit]
            pos = hit + len(sep)

    def splitlines(self, keepends=False):
        raise _too_big(
            "This text",
            len(self),
            "iterate over context.iter_lines(), or use split('\\n', maxsplit=N) for the first N lines.",
        )

    def split(self, sep=None, maxsplit=-1):
        """str.split with a bound: maxsplit must be given for a lazy text; the last piece (the
        rest) stays lazy when it is large."""
        if maxsplit is None or maxsplit < 0:
            raise _too_big(
                "This text",
                len(self),
                "give maxsplit (context.split(sep, N) keeps the rest lazy), or iterate with "
                "iter_split(sep) / iter_lines().",
            )
        out = []
        n = len(self)
        pos = 0
        if sep is None:
            import re as _re

            ws = _re.compile(r"\s+")
            while len(out) < maxsplit:
                window = self[pos : min(n, pos + _settings.read_chunk)]
                window = window if isinstance(window, str) else str(window)
                m = ws.match(window)
                if m:
                    pos += m.end()
                    continue
                if pos >= n:
                    return out
                m = ws.search(window)
                if m is None and pos + len(window) < n:
                    # A single word longer than a chunk: find its end the slow way.
                    end = pos + len(window)
                    while end < n and not self[end].isspace():
                        end += 1
                    out.append(self[pos:end])
                    pos = end
                    continue
                end = pos + (m.start() if m else len(window))
                out.append(self[pos:end])
                pos = end
            while pos < n and self[pos].isspace():
                pos += 1
            if pos < n:
                out.append(self[pos:n])
            return out
        if not isinstance(sep, str) or not sep:
            raise ValueError("empty separator")
        while len(out) < maxsplit:
            hit = self._find(sep, pos, None, False)
            if hit < 0:
                break
            out.append(self[pos:hit])
            pos = hit + len(sep)
        out.append(self[pos:n])
        return out

    def rsplit(self, sep=None, maxsplit=-1):
        """str.rsplit with a bound (sep must be given; maxsplit must be given)."""
        if maxsplit is None or maxsplit < 0 or not isinstance(sep, str) or not sep:
            raise _too_big(
                "This text", len(self), "call rsplit(sep, N) with a separator and a bound."
            )
        out = []
        end = len(self)
        while len(out) < maxsplit:
            hit = self._find(sep, None, end, True)
            if hit < 0:
                break
            out.append(self[hit + len(sep) : end])
            end = hit
        out.append(self[0:end])
        out.reverse()
        return out


class _LazyContainer:
    """A large sequence or mapping node on the host, of `n` items."""

    __slots__ = ("_node", "_len")

    def __init__(self, node, n):
        self._node = node
        self._len = n

    def __len__(self):
        return self._len


class LazyList(_LazyContainer):
    """A large list (documents or JSON) on the host; items load when you index or iterate."""

    __slots__ = ()

    def __getitem__(self, key):
        if isinstance(key, slice):
            return [self[i] for i in range(*key.indices(self._len))]
        if not isinstance(key, int):
            raise TypeError(f"list indices must be integers or slices, not {type(key).__name__}")
        i = key + self._len if key < 0 else key
        if not 0 <= i < self._len:
            raise IndexError("list index out of range")
        return _materialize(_host(_ctx.child, self._node, i))

    def __iter__(self):
        for i in range(self._len):
            yield self[i]

    def __repr__(self):
        return f"<lazy list of {self._len:,} items; index it or iterate to load items>"

    def __getattr__(self, name):
        if hasattr(list, name):
            raise AttributeError(
                f"list.{name}() is not available on a lazy list of {self._len:,} items; "
                "index it, slice it (a real list), or iterate over it."
            )
        raise AttributeError(f"'LazyList' object has no attribute {name!r}")


class LazyDict(_LazyContainer):
    """A large JSON object on the host; values load when you look them up."""

    __slots__ = ()

    def keys(self):
        page = 1024
        for start in range(0, self._len, page):
            yield from _host(_ctx.keys, self._node, start, page)

    __iter__ = keys

    def __contains__(self, key):
        return isinstance(key, str) and _host(_ctx.lookup, self._node, _clean(key)) is not None

    def __getitem__(self, key):
        if not isinstance(key, str):
            raise KeyError(key)
        node = _host(_ctx.lookup, self._node, _clean(key))
        if node is None:
            raise KeyError(key)
        return _materialize(node)

    def get(self, key, default=None):
        try:
            return self[key]
        except KeyError:
            return default

    def values(self):
        for i in range(self._len):
            yield _materialize(_host(_ctx.child, self._node, i))

    def items(self):
        return zip(self.keys(), self.values())

    def __repr__(self):
        return f"<lazy dict of {self._len:,} keys; look keys up or iterate to load values>"


# --------------------------------------------------------------------------------------------
# Functions the model calls
# --------------------------------------------------------------------------------------------


def _model_arg(model):
    return None if model is None else _clean(model)


def llm_query(prompt, model=None):
    """Ask a sub-LLM `prompt`; returns its answer as a str, or a str starting "Error:"."""
    try:
        return _llm.llm_query(_clean(prompt), _model_arg(model))
    except Err as e:
        return f"Error: {e.value}"


def llm_batch(prompts, model=None):
    """Ask a sub-LLM every prompt in `prompts`, concurrently. Returns answers in order; a failed
    prompt gives a str starting "Error:" in its slot."""
    if isinstance(prompts, str):
        raise TypeError("llm_batch takes a list of prompts; for one prompt use llm_query")
    prompts = [_clean(p) for p in prompts]
    if not prompts:
        return []
    out = []
    for r in _llm.llm_batch(prompts, _model_arg(model)):
        out.append(r.value if type(r).__name__ == "Ok" else f"Error: {r.value}")
    return out


def rlm_query(prompt, model=None):
    """Ask a recursive sub-RLM (with a REPL of its own) `prompt`; returns its answer as a str, or
    a str starting "Error:"."""
    try:
        return _llm.rlm_query(_clean(prompt), _model_arg(model))
    except Err as e:
        return f"Error: {e.value}"


_roots = {}


def search(pattern, max=100, ignore_case=False, within="context", max_match_chars=1000):
    """Regex search on the host (Rust regex syntax: no look-around or back-references; linear
    time). Returns up to `max` matches as dicts with "start"/"end" (character offsets into the
    searched text), "text" (the match), "line" (its line) and "path" (for a list or dict
    context: the indices/keys leading to the text the match is in)."""
    view = None
    if isinstance(within, str):
        if within not in _roots:
            raise ValueError(f"search: no context named {within!r}; known: {sorted(_roots)}")
        node = _roots[within]
    elif isinstance(within, LazyText):
        node, view = within._node, within
    elif isinstance(within, _LazyContainer):
        node = within._node
    else:
        raise TypeError(
            "search(within=...) takes a context name such as 'context' or 'context_1', or a lazy "
            "part of one; for a str you hold, use re.finditer"
        )
    limit = int(max)
    if limit <= 0:
        return []
    opts = _ctx.SearchOptions(
        max_results=min(limit, 2**31) if view is None else 2**31 - 1,
        ignore_case=bool(ignore_case),
        max_match_chars=int(max_match_chars),
    )
    hits = _host(_ctx.search, node, _clean(pattern), opts)
    out = []
    for h in hits:
        start, end = h.start, h.end
        if view is not None:
            if start < view._start or end > view._end:
                continue
            start, end = start - view._start, end - view._start
        out.append(
            {
                "start": start,
                "end": end,
                "text": h.text,
                "line": h.line,
                "path": [p.value for p in h.path],
            }
        )
        if len(out) >= limit:
            break
    return out


class _Finish:
    value = None


_finish = _Finish()


def FINAL(answer):
    """Finish the run with `answer` (converted to str)."""
    _finish.value = answer if isinstance(answer, str) else str(answer)


def FINAL_VAR(name):
    """Finish the run with the value of the variable named `name`."""
    if isinstance(name, str):
        key = name.strip().strip("'\"")
        if key not in _globals:
            raise NameError(
                f"FINAL_VAR({name!r}): no variable named {key!r}. Assign it first, or call "
                "FINAL(value) with the value itself."
            )
        value = _globals[key]
    else:
        value = name
    _finish.value = value if isinstance(value, str) else str(value)


def SHOW_VARS():
    """Print the variables defined in the REPL with their types and sizes."""
    rows = []
    for k, v in _globals.items():
        if k.startswith("_") or k in _BUILTIN_NAMES or type(v).__name__ == "module":
            continue
        size = ""
        try:
            size = f", len {len(v):,}"
        except Exception:
            pass
        rows.append(f"{k}: {type(v).__name__}{size}")
    print("\n".join(rows) if rows else "(no variables yet)")


# --------------------------------------------------------------------------------------------
# Containment: exits end the step, not the instance
# --------------------------------------------------------------------------------------------


def _exit_step(code=0):
    raise SystemExit(code)


os._exit = _exit_step
builtins.exit = _exit_step
builtins.quit = _exit_step


def _no_input(prompt=""):
    raise EOFError("input() is not available in the sandbox: there is no stdin")


builtins.input = _no_input


# --------------------------------------------------------------------------------------------
# The REPL
# --------------------------------------------------------------------------------------------


_globals = {"__name__": "__main__", "__builtins__": builtins}
_BUILTIN_NAMES = {
    "llm_query", "llm_batch", "rlm_query", "search", "FINAL", "FINAL_VAR", "SHOW_VARS",
    "LazyText", "LazyList", "LazyDict", "answer",
}


def _install_names():
    _globals.update(
        llm_query=llm_query, llm_batch=llm_batch, rlm_query=rlm_query, search=search,
        FINAL=FINAL, FINAL_VAR=FINAL_VAR, SHOW_VARS=SHOW_VARS, LazyText=LazyText,
        LazyList=LazyList, LazyDict=LazyDict,
    )
    _globals["answer"] = {"content": "", "ready": False}


_install_names()


def _filtered(te):
    """Keep only the model's own frames in a TracebackException (and its causes)."""
    seen = set()
    while te is not None and id(te) not in seen:
        seen.add(id(te))
        te.stack = traceback.StackSummary.from_list(
            [f for f in te.stack if f.filename.startswith(_STEP_PREFIX)]
        )
        if te.__cause__ is not None:
            _filtered(te.__cause__)
        te = te.__context__


def _format_exception(exc):
    te = traceback.TracebackException.from_exception(exc, capture_locals=False)
    _filtered(te)
    return _clean("".join(te.format()))


class _State:
    step = 0


_state = _State()


def _run(code):
    _state.step += 1
    filename = f"{_STEP_PREFIX}{_state.step}>"
    out = _CappedStream(_settings.max_output_bytes)
    err = _CappedStream(_settings.max_output_bytes)
    _finish.value = None
    error = None
    saved = (sys.stdout, sys.stderr)
    sys.stdout, sys.stderr = out, err
    try:
        try:
            tree = ast.parse(code, filename, "exec")
        except (SyntaxError, ValueError) as e:
            error = _clean("".join(traceback.format_exception_only(type(e), e)))
            tree = None
        if tree is not None:
            lines = code.splitlines(True)
            linecache.cache[filename] = (len(code), None, lines, filename)
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            exec(compile(tree, filename, "exec"), _globals)
            if last is not None:
                value = eval(compile(last, filename, "eval"), _globals)
                if value is not None:
                    _globals["_"] = value
                    print(repr(value))
    except SystemExit as e:
        code_ = e.code
        if code_ not in (None, 0):
            error = f"SystemExit: {code_} (the step ended; the REPL keeps its state)"
    except BaseException as e:  # noqa: BLE001 - model code may raise anything
        try:
            error = _format_exception(e)
        except BaseException as inner:  # noqa: BLE001
            error = f"{type(e).__name__}: (traceback unavailable: {type(inner).__name__})"
    finally:
        sys.stdout, sys.stderr = saved
    final = _finish.value
    if final is None:
        ans = _globals.get("answer")
        if isinstance(ans, dict) and ans.get("ready"):
            content = ans.get("content")
            final = content if isinstance(content, str) else str(content)
    return _repl.StepResult(
        stdout=out.getvalue(),
        stderr=err.getvalue(),
        stdout_dropped=out.dropped,
        stderr_dropped=err.dropped,
        error=error,
        final_answer=None if final is None else _clean(final),
    )


class Repl(exports.Repl):
    """The exported REPL interface."""

    def init(self, options):
        _settings.lazy_threshold = int(options.lazy_threshold_chars)
        _settings.max_output_bytes = int(options.max_output_bytes)
        _settings.read_chunk = max(1, int(options.read_chunk_chars))

    def attach_context(self, slot, name):
        try:
            node = _ctx.root(slot)
            _roots[name] = node
            _globals[name] = _materialize(node)
        except Err:
            raise
        except BaseException as e:  # noqa: BLE001
            raise Err(f"could not load {name}: {type(e).__name__}: {e}") from None

    def exec(self, code):
        try:
            return _run(code)
        except BaseException as e:  # noqa: BLE001 - never let an exception escape the export
            return _repl.StepResult(
                stdout="", stderr="", stdout_dropped=0, stderr_dropped=0,
                error=f"internal REPL error: {type(e).__name__}: {e}", final_answer=None,
            )
