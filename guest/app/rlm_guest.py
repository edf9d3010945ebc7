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
<tool>(*args, **kwargs)    each custom tool the host registered: arguments map onto its parameters
                           (positional ones in order), cross as JSON, and the JSON result comes
                           back as Python values; a failure raises ToolError. Evaluating a tool's
                           name shows its parameters and description.
ToolError                  the exception a failed tool call raises (a RuntimeError).

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
import random
import re
import sys
import traceback

# Every module here is imported at build time and snapshotted into the component. Model code can
# import exactly these (plus the interpreter's built-in C modules). Keep the list explicit: the
# host's tests import each one inside the sandbox.
PREIMPORTED = (
    "abc", "array", "ast", "asyncio", "base64", "binascii", "bisect", "calendar", "cmath", "codecs",
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

import rlm_checkpoint  # noqa: E402
import rlm_fastre  # noqa: E402
from componentize_py_types import Err  # noqa: E402
from wit_world import exports  # noqa: E402
from wit_world.exports import repl as _repl  # noqa: E402
from wit_world.imports import context as _ctx  # noqa: E402
from wit_world.imports import llm as _llm  # noqa: E402
from wit_world.imports import tools as _tools  # noqa: E402

# The first patch of `re`: the lazy contexts' wrappers (`_LazyRe.install`) go over it.
rlm_fastre.install()

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


# Kept before model code can rebind `os.write`: the streams below write through it.
_os_write = os.write


class _CappedStream(io.TextIOBase):
    """A text stream that passes at most `cap` bytes of UTF-8 on to file descriptor `fd` (the
    host's capped pipe) and counts the rest. Each line goes on as soon as it is complete (and
    any text once 8 KiB wait), so a step that a limit stops keeps what it printed before."""

    _PENDING_BYTES = 8192

    def __init__(self, cap, fd):
        self._cap = cap
        self._fd = fd
        self._pending = []
        self._pending_bytes = 0
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
            head, took = s, n
        elif room > 0:
            head = s.encode("utf-8", "surrogatepass")[:room].decode("utf-8", "ignore")
            took = len(head.encode("utf-8", "surrogatepass"))
        else:
            head, took = "", 0
        self.dropped += n - took
        if took:
            self._kept += took
            self._pending.append(head)
            self._pending_bytes += took
            if "\n" in head or self._pending_bytes >= self._PENDING_BYTES:
                self.flush()
        return len(s)

    def flush(self):
        if not self._pending:
            return
        data = _clean("".join(self._pending)).encode("utf-8")
        self._pending.clear()
        self._pending_bytes = 0
        try:
            view = memoryview(data)
            while view:
                view = view[_os_write(self._fd, view):]
        except OSError:
            # Model code closed the descriptor: what did not go is counted as dropped.
            self.dropped += len(view)


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


def _materialize(node, whole=False, lazy=False):
    """The Python value of a context node.

    `whole`: load it as real Python objects however large (the host decided it fits this REPL's
    memory). `lazy`: keep it lazy however small (the host decided it does not fit). Otherwise a
    piece above the lazy threshold stays a lazy object served by the host.
    """
    info = _host(_ctx.info, node)
    kind = info.kind
    big = lazy or info.size_chars > _settings.lazy_threshold
    if kind == _ctx.NodeKind.TEXT:
        if whole or not big:
            return _read_text(node, 0, info.len)
        return LazyText(node, 0, info.len)
    if kind == _ctx.NodeKind.SCALAR:
        return json.loads(_host(_ctx.to_json, node))
    if not whole and big:
        return LazyList(node, info.len) if kind == _ctx.NodeKind.SEQUENCE else LazyDict(node, info.len)
    if info.size_chars <= _settings.read_chunk:
        # Small enough to cross as one piece of JSON.
        return json.loads(_host(_ctx.to_json, node))
    # Real, built item by item (each item's JSON or text crosses on its own).
    if kind == _ctx.NodeKind.SEQUENCE:
        return [_materialize(_host(_ctx.child, node, i), True) for i in range(info.len)]
    keys = []
    page = 1024
    while len(keys) < info.len:
        got = _host(_ctx.keys, node, len(keys), page)
        if not got:
            break
        keys.extend(got)
    return {k: _materialize(_host(_ctx.child, node, i), True) for i, k in enumerate(keys)}


def _too_big(what, n, use):
    return MemoryError(
        f"{what} has {n:,} characters, too many for this sandbox's memory (the context is lazy, "
        f"served by the host); {use}"
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
                f"str.{name}() would copy all {len(self):,} characters of this lazy text, more "
                f"than the sandbox's memory holds: call it on a slice (context[a:b].{name}(...)), "
                f"or use re/search(pattern, ignore_case=True)/find/count/iter_lines()/chunks()."
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

    def iter_words(self):
        """Yield the pieces of text.split() (runs of non-whitespace) one at a time."""
        carry = ""
        for chunk in self.chunks():
            s = carry + chunk
            parts = s.split()
            carry = ""
            if parts and not s[-1].isspace():
                carry = parts.pop()
            yield from parts
        if carry:
            yield carry

    def splitlines(self, keepends=False):
        """The lines, as str.splitlines() gives them, produced on demand (a LazyPieces: iterate,
        len(), index or slice it)."""
        return LazyPieces(lambda: self.iter_lines(keepends), "lines")

    def split(self, sep=None, maxsplit=-1):
        """str.split. Without maxsplit the pieces are produced on demand (a LazyPieces); with
        maxsplit N, a list whose last piece (the rest) stays lazy when it is large."""
        if maxsplit is None or maxsplit < 0:
            if sep is None:
                return LazyPieces(self.iter_words, "words")
            if not isinstance(sep, str):
                raise TypeError(f"must be str or None, not {type(sep).__name__}")
            if not sep:
                raise ValueError("empty separator")
            return LazyPieces(lambda: self.iter_split(sep), "pieces")
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
        """str.rsplit (without maxsplit, the same pieces as split())."""
        if maxsplit is None or maxsplit < 0:
            return self.split(sep)
        if not isinstance(sep, str) or not sep:
            raise _too_big(
                "This text", len(self), "call rsplit(sep, N) with a separator string."
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


class LazyPieces:
    """The lines (or split pieces) of a lazy text, produced on demand.

    Iterate over it, take len() (one pass, remembered), index or slice it (a real list). Each
    access reads the text again from the host, so keep what you need in a list.
    """

    __slots__ = ("_make", "_len", "_what")

    def __init__(self, make, what):
        self._make = make
        self._len = None
        self._what = what

    def __iter__(self):
        return iter(self._make())

    def __len__(self):
        if self._len is None:
            n = 0
            for _ in self._make():
                n += 1
            self._len = n
        return self._len

    def __bool__(self):
        for _ in self._make():
            return True
        return False

    def __getitem__(self, key):
        import itertools as _it

        if isinstance(key, slice):
            if (key.step is None or key.step > 0) and all(
                v is None or v >= 0 for v in (key.start, key.stop)
            ):
                return list(_it.islice(self._make(), key.start, key.stop, key.step))
            r = range(*key.indices(len(self)))
            if not r:
                return []
            lo, hi = min(r[0], r[-1]), max(r[0], r[-1])
            got = list(_it.islice(self._make(), lo, hi + 1))
            return [got[i - lo] for i in r]
        if not isinstance(key, int):
            raise TypeError(f"list indices must be integers or slices, not {type(key).__name__}")
        i = key + len(self) if key < 0 else key
        for item in _it.islice(self._make(), i, i + 1) if i >= 0 else ():
            return item
        raise IndexError("list index out of range")

    def __repr__(self):
        return f"<the {self._what} of a lazy text, produced on demand: iterate, index or slice>"


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
# `re` over a lazy text
# --------------------------------------------------------------------------------------------


class _ShiftedMatch:
    """A match found in one piece of a lazy text, with offsets into the whole text."""

    __slots__ = ("_m", "_off", "string")

    def __init__(self, m, off, string):
        self._m = m
        self._off = off
        self.string = string

    def start(self, group=0):
        p = self._m.start(group)
        return p if p < 0 else p + self._off

    def end(self, group=0):
        p = self._m.end(group)
        return p if p < 0 else p + self._off

    def span(self, group=0):
        return (self.start(group), self.end(group))

    def group(self, *groups):
        return self._m.group(*groups)

    def __getitem__(self, g):
        return self._m[g]

    def groups(self, default=None):
        return self._m.groups(default)

    def groupdict(self, default=None):
        return self._m.groupdict(default)

    def expand(self, template):
        return self._m.expand(template)

    @property
    def re(self):
        return self._m.re

    @property
    def lastindex(self):
        return self._m.lastindex

    @property
    def lastgroup(self):
        return self._m.lastgroup

    @property
    def pos(self):
        return 0

    @property
    def endpos(self):
        return len(self.string)

    def __bool__(self):
        return True

    def __repr__(self):
        return f"<re.Match object; span={self.span()!r}, match={self.group()!r}>"


class _LazyRe:
    """Makes the `re` module's functions (and compiled patterns) accept a lazy text.

    Installed only when a context is lazy; real `str` arguments go straight to `re` itself. The
    text is scanned in pieces that overlap, so a match is found whole unless it is longer than
    the overlap (64 Ki characters); offsets are into the whole text.
    """

    OVERLAP = 64 * 1024
    BEHIND = 256

    def __init__(self):
        self.installed = False
        self.orig = {}

    def finditer(self, pat, text, pos=0, endpos=None):
        n = len(text)
        pos, end, _ = slice(pos, endpos).indices(n)
        chunk = max(4096, _settings.read_chunk)
        p = pos
        while p <= end:
            lo = max(0, p - self.BEHIND)
            hi = min(end, p + chunk + self.OVERLAP)
            last = hi >= end
            piece = _read_text(text._node, text._start + lo, text._start + hi)
            limit = p + chunk
            nxt = None
            last_end = p
            for m in pat.finditer(piece, p - lo):
                a, e = m.start() + lo, m.end() + lo
                if not last and (a >= limit or (e >= hi and a > p)):
                    # Starts in the next piece, or may run past this one: look again from there.
                    nxt = a
                    break
                yield _ShiftedMatch(m, lo, text)
                last_end = e
                if e >= hi and not last:
                    # A match as long as the whole window: taken as is.
                    nxt = max(a + 1, e)
                    break
            if last:
                return
            p = max(nxt if nxt is not None else max(limit, last_end), p + 1)

    @staticmethod
    def _findall_item(m, groups):
        if groups == 0:
            return m.group(0)
        if groups == 1:
            g = m.group(1)
            return "" if g is None else g
        return m.groups("")

    def too_big(self, func, text):
        return _too_big(
            "This text",
            len(text),
            f"re.{func}() over all of it would build a copy; use re.finditer/findall/search, "
            "or call it on a slice (context[a:b]).",
        )

    def run(self, func, pat, text, args):
        """Call `func` of compiled `pat` on lazy `text`."""
        if func == "finditer":
            return self.finditer(pat, text, *args)
        if func == "findall":
            return [self._findall_item(m, pat.groups) for m in self.finditer(pat, text, *args)]
        if func == "search":
            for m in self.finditer(pat, text, *args):
                return m
            return None
        if func == "match":
            pos = args[0] if args else 0
            a, b = text._bounds(pos, pos + max(4096, _settings.read_chunk) + self.OVERLAP)
            m = pat.match(_read_text(text._node, a, b))
            return None if m is None else _ShiftedMatch(m, pos, text)
        if func == "split":
            maxsplit = args[0] if args else 0
            if not maxsplit or maxsplit < 0:
                raise self.too_big("split", text)
            out, prev = [], 0
            for m in self.finditer(pat, text):
                if len(out) >= maxsplit:
                    break
                out.append(text[prev : m.start()])
                out.extend(m.groups())
                prev = m.end()
            out.append(text[prev:])
            return out
        raise self.too_big(func, text)

    def install(self):
        if self.installed:
            return
        self.installed = True
        import re as re_mod

        orig = {f: getattr(re_mod, f) for f in (
            "search", "match", "fullmatch", "findall", "finditer", "sub", "subn", "split",
            "compile",
        )}
        self.orig = orig
        lazy = self

        def module_func(name):
            real = orig[name]

            if name in ("sub", "subn"):

                def f(pattern, repl, string, *args, **kwargs):
                    if isinstance(string, LazyText):
                        raise lazy.too_big(name, string)
                    return real(pattern, repl, string, *args, **kwargs)

                f.__name__ = name
                f.__doc__ = real.__doc__
                return f

            def f(pattern, string, *args, **kwargs):
                if not isinstance(string, LazyText):
                    return real(pattern, string, *args, **kwargs)
                flags = kwargs.pop("flags", 0)
                if name in ("findall", "finditer", "search", "match", "fullmatch") and args:
                    flags = args[0]
                    args = ()
                if name == "split" and len(args) > 1:
                    flags = args[1]
                    args = args[:1]
                if "maxsplit" in kwargs:
                    args = (kwargs.pop("maxsplit"),)
                pat = pattern._p if isinstance(pattern, _Pattern) else orig["compile"](pattern, flags)
                return lazy.run(name, pat, string, args)

            f.__name__ = name
            f.__doc__ = real.__doc__
            return f

        class _Pattern:
            """A compiled pattern whose methods also accept a lazy text."""

            __slots__ = ("_p",)

            def __init__(self, p):
                self._p = p

            def __getattr__(self, name):
                attr = getattr(self._p, name)
                if name not in ("search", "match", "fullmatch", "findall", "finditer", "sub",
                                "subn", "split"):
                    return attr

                if name in ("sub", "subn"):

                    def method(repl, string, *args, **kwargs):
                        if isinstance(string, LazyText):
                            raise lazy.too_big(name, string)
                        return attr(repl, string, *args, **kwargs)

                    return method

                def method(string, *args, **kwargs):
                    if isinstance(string, LazyText):
                        if name == "split" and "maxsplit" in kwargs:
                            args = (kwargs.pop("maxsplit"),)
                        return lazy.run(name, self._p, string, args)
                    return attr(string, *args, **kwargs)

                return method

            def __repr__(self):
                return repr(self._p)

            def __eq__(self, other):
                return self._p == (other._p if isinstance(other, _Pattern) else other)

            def __hash__(self):
                return hash(self._p)

        globals()["_Pattern"] = _Pattern

        def compile_(pattern, flags=0):
            if isinstance(pattern, _Pattern):
                return pattern
            return _Pattern(orig["compile"](pattern, flags))

        for name in orig:
            if name != "compile":
                setattr(re_mod, name, module_func(name))
        re_mod.compile = compile_


class _Pattern:  # replaced by _LazyRe.install
    pass


_lazy_re = _LazyRe()


# --------------------------------------------------------------------------------------------
# Functions the model calls
# --------------------------------------------------------------------------------------------


def _model_arg(model):
    return None if model is None else _clean(model)


def _reply(r):
    """A sub-call's `reply` as the model sees it: the answer, or "Error: ..."."""
    if isinstance(r, _llm.Reply_Answer):
        return _Reply(r.value)
    return _Reply(f"Error: {r.value}")


def llm_query(prompt, model=None):
    """Ask a sub-LLM `prompt`; returns its answer as a str, or a str starting "Error:"."""
    return _reply(_llm.llm_query(_clean(prompt), _model_arg(model)))


def llm_batch(prompts, model=None):
    """Ask a sub-LLM every prompt in `prompts`, concurrently. Returns answers in order; a failed
    prompt gives a str starting "Error:" in its slot."""
    if isinstance(prompts, str):
        raise TypeError("llm_batch takes a list of prompts; for one prompt use llm_query")
    prompts = [_clean(p) for p in prompts]
    if not prompts:
        return _Replies()
    out = []
    for r in _llm.llm_batch(prompts, _model_arg(model)):
        out.append(r.value if type(r).__name__ == "Ok" else f"Error: {r.value}")
    return _Replies(out)


def rlm_query(prompt, model=None):
    """Ask a recursive sub-RLM (with a REPL of its own) `prompt`; returns its answer as a str, or
    a str starting "Error:"."""
    return _reply(_llm.rlm_query(_clean(prompt), _model_arg(model)))


def rlm_batch(prompts, model=None):
    """Ask a recursive sub-RLM every prompt in `prompts`, concurrently. Returns answers in order;
    a failed prompt gives a str starting "Error:" in its slot."""
    if isinstance(prompts, str):
        raise TypeError("rlm_batch takes a list of prompts; for one prompt use rlm_query")
    prompts = [_clean(p) for p in prompts]
    if not prompts:
        return _Replies()
    out = []
    for r in _llm.rlm_batch(prompts, _model_arg(model)):
        out.append(r.value if type(r).__name__ == "Ok" else f"Error: {r.value}")
    return _Replies(out)


# The names other RLM REPLs give the same functions (the official rlm and DSPy), for models
# trained or prompted on them.
def llm_query_batched(prompts, model=None):
    """Same as llm_batch (the name the official rlm and DSPy use)."""
    return llm_batch(prompts, model)


def rlm_query_batched(prompts, model=None):
    """Same as rlm_batch (the name the official rlm uses)."""
    return rlm_batch(prompts, model)


_roots = {}


def search(pattern, max=100, ignore_case=None, within="context", max_match_chars=1000):
    """Regex search on the host (Rust regex syntax: no look-around or back-references; linear
    time). Returns up to `max` matches as dicts with "start"/"end" (character offsets into the
    searched text), "text" (the match), "line" (its line, at most 250 characters each side),
    "snippet" (the match with up to 80 characters before and 120 after, within its line) and
    "path" (for a list or dict context: the indices/keys leading to the text the match is in). Case: `ignore_case=None`
    (the default) ignores case when the pattern has no capital letter (as ripgrep's smart
    case); a pattern with capitals that finds nothing prints how many matches ignoring case
    would find."""
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
    pattern = _clean(pattern)
    smart = ignore_case is None
    if smart:
        ignore_case = not _has_capitals(pattern)
    start, end = (0, 2**64 - 1) if view is None else (view._start, view._end)
    opts = _ctx.SearchOptions(
        max_results=min(limit, 2**31),
        ignore_case=bool(ignore_case),
        max_match_chars=int(max_match_chars),
        start=start,
        end=end,
    )
    hits = _host(_ctx.search, node, pattern, opts)
    if not hits and smart and not ignore_case:
        anycase = _ctx.SearchOptions(
            max_results=1000, ignore_case=True, max_match_chars=int(max_match_chars),
            start=start, end=end,
        )
        n = len(_host(_ctx.search, node, pattern, anycase))
        if n:
            more = "+" if n >= 1000 else ""
            print(
                f"search: no match for {pattern!r} as written; {n}{more} ignoring case "
                f"(search(..., ignore_case=True))"
            )
    out = []
    for h in hits:
        start, end = h.start, h.end
        if view is not None:
            start, end = start - view._start, end - view._start
        out.append(
            {
                "start": start,
                "end": end,
                "text": h.text,
                "line": h.line,
                "snippet": _snippet(h.line, h.text),
                "path": [p.value for p in h.path],
            }
        )
        if len(out) >= limit:
            break
    return out


def _snippet(line, text, before=80, after=120):
    """The match `text` in its `line` with a little of what surrounds it (the first place the
    line holds it), on one line."""
    at = line.find(text) if text else -1
    if at < 0:
        return line[: before + after].strip()
    lo = max(0, at - before)
    hi = at + len(text) + after
    head = "..." if lo > 0 else ""
    tail = "..." if hi < len(line) else ""
    return head + line[lo:hi].strip() + tail


def _has_capitals(pattern):
    """Whether a regex pattern has a capital letter of its own (not in an escape such as \\S or
    \\W, nor a (?i) flag)."""
    escaped = False
    for c in pattern:
        if escaped:
            escaped = False
        elif c == "\\":
            escaped = True
        elif c.isupper():
            return True
    return False


class ToolError(RuntimeError):
    """A custom tool call failed: the tool's own error, an unknown tool, arguments that do not fit
    its parameters, or a result too large for the sandbox. The message says which."""


def _tool_json(value):
    """JSON for values `json` does not know: lazy text loads as a str."""
    if isinstance(value, LazyText):
        return str(value)
    raise TypeError(
        f"{type(value).__name__} is not a JSON value (use str, int, float, bool, None, list, dict)"
    )


class _Tool:
    """A custom tool registered by the host, called like a function."""

    def __init__(self, name, description, params, required):
        self.__name__ = name
        self.__qualname__ = name
        self._params = tuple(params)
        self._required = frozenset(required)
        self.__doc__ = description

    def _signature(self):
        parts = [p if p in self._required else f"{p}=None" for p in self._params]
        return f"{self.__name__}({', '.join(parts)})"

    def __repr__(self):
        doc = (self.__doc__ or "").strip()
        return f"<tool {self._signature()}{': ' + doc if doc else ''}>"

    def __call__(self, *args, **kwargs):
        name = self.__name__
        if len(args) > len(self._params):
            raise TypeError(
                f"{name}() takes at most {len(self._params)} positional arguments "
                f"({len(args)} given); its parameters: {self._signature()}"
            )
        call = dict(zip(self._params, args))
        for k, v in kwargs.items():
            if k in call:
                raise TypeError(f"{name}() got multiple values for argument {k!r}")
            call[k] = v
        missing = [p for p in self._params if p in self._required and p not in call]
        if missing:
            raise TypeError(
                f"{name}() is missing required argument(s) {', '.join(map(repr, missing))}; "
                f"its parameters: {self._signature()}"
            )
        try:
            args_json = json.dumps(call, ensure_ascii=False, default=_tool_json)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name}(): arguments cross to the host as JSON: {e}") from None
        r = _tools.call_tool(name, _clean(args_json))
        if isinstance(r, _llm.Reply_Answer):
            try:
                return json.loads(r.value)
            except ValueError as e:
                raise ToolError(f"{name}: the tool's result is not JSON ({e})") from None
        raise ToolError(f"{name}: {r.value}")


def _bind_tools(specs):
    """Make one function per tool and add it to the REPL's fixed names."""
    for spec in specs:
        name = spec.name
        import keyword

        if (
            not name.isidentifier()
            or name.startswith("_")
            or keyword.iskeyword(name)
            or keyword.issoftkeyword(name)
            or name in _SCAFFOLD
            or name in _BUILTINS
            or name in _globals
        ):
            raise Err(f"cannot bind the tool {name!r}: not a free Python name")
        _SCAFFOLD[name] = _Tool(name, spec.description, spec.params, spec.required)


class _Finish:
    value = None


_finish = _Finish()


class _Shown(str):
    """A str that the REPL echoes as plain text (not as a quoted repr)."""

    __slots__ = ()

    def __repr__(self):
        return str.__str__(self)


def _as_answer(value):
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "content" in value and len(value) <= 2:
        # The `answer` protocol's dict handed over whole: its content is the answer.
        value = value["content"]
        return value if isinstance(value, str) else str(value)
    return str(value)


def FINAL(answer):
    """Finish the run with `answer` (converted to str)."""
    _finish.value = _as_answer(answer)


def FINAL_VAR(name):
    """Finish the run with the value of the variable named `name` (or with `name` itself when it
    is not a str). Returns the answer."""
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
    _finish.value = _as_answer(value)
    return _Shown(_finish.value)


def SUBMIT(*args, **fields):
    """Finish the run (DSPy's name): SUBMIT(answer), SUBMIT(answer=...); several values (DSPy's
    output fields in order) are given as a JSON array, several named fields as a JSON object."""
    if args and fields:
        raise TypeError("SUBMIT takes either values or named fields, not both")
    if len(args) > 1:
        value = json.dumps(list(args), default=str, ensure_ascii=False)
    elif args:
        value = args[0]
    elif not fields:
        raise TypeError("SUBMIT needs the answer, e.g. SUBMIT(answer) or SUBMIT(answer=...)")
    elif len(fields) == 1:
        value = next(iter(fields.values()))
    elif "answer" in fields and all(k in ("answer", "reasoning") for k in fields):
        value = fields["answer"]
    else:
        value = json.dumps(fields, default=str, ensure_ascii=False)
    _finish.value = _as_answer(value)


def SHOW_VARS():
    """The variables defined in the REPL with their types and sizes, as text (print it, or call
    it as the last line of a step)."""
    rows = []
    for k, v in _globals.items():
        if k.startswith("_") or k in _SCAFFOLD or type(v).__name__ == "module":
            continue
        size = ""
        try:
            size = f", len {len(v):,}"
        except Exception:
            pass
        rows.append(f"{k}: {type(v).__name__}{size}")
    return _Shown("\n".join(rows) if rows else "(no variables yet)")


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

# Modules bound in the REPL from the start, so code that forgets `import re` still runs.
PREBOUND = (
    "re", "json", "math", "collections", "itertools", "functools", "statistics", "string",
    "textwrap", "datetime", "random", "heapq", "bisect", "difflib", "csv", "io", "time",
    "hashlib", "base64", "unicodedata", "operator", "copy", "pprint", "typing",
)

# The REPL's own names. They are put back after every step, so a step that rebinds one
# (`FINAL = None`, `search = "x"`) cannot break the next.
_SCAFFOLD = {
    "llm_query": llm_query,
    "llm_batch": llm_batch,
    "llm_query_batched": llm_query_batched,
    "rlm_query": rlm_query,
    "rlm_batch": rlm_batch,
    "rlm_query_batched": rlm_query_batched,
    "search": search,
    "FINAL": FINAL,
    "FINAL_VAR": FINAL_VAR,
    "SUBMIT": SUBMIT,
    "SHOW_VARS": SHOW_VARS,
    "LazyText": LazyText,
    "LazyList": LazyList,
    "LazyDict": LazyDict,
    "LazyPieces": LazyPieces,
    "ToolError": ToolError,
}
# Builtins as the REPL set them up; restored after every step (model code may patch them).
_BUILTINS = dict(vars(builtins))


def _new_answer():
    return {"content": "", "ready": False}


def _install_names(g=None):
    """Put the scaffold back: the REPL's functions, `print`, the builtins, `answer` when it is
    gone, and the `context_0` alias of `context` (in the REPL's globals, or in `g`)."""
    if g is None:
        g = _globals
    g.update(_SCAFFOLD)
    g["__builtins__"] = builtins
    b = vars(builtins)
    if b != _BUILTINS:
        # Rare (model code patched a builtin): put back each one, drop what was added.
        for k, v in _BUILTINS.items():
            if b.get(k) is not v:
                b[k] = v
        for k in [k for k in b if k not in _BUILTINS]:
            del b[k]
    if g.get("print", print) is not print:
        del g["print"]
    if "answer" not in g:
        g["answer"] = _new_answer()


for _name in PREBOUND:
    _globals[_name] = sys.modules[_name]
_install_names()
# The names a checkpoint saves by name only while they keep these values (the same objects in
# every instance).
_FIXED = {**{n: sys.modules[n] for n in PREBOUND}, **_SCAFFOLD}


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


# Top-level `await` (code written for async REPLs: `await llm_query(...)`,
# `asyncio.gather(...)`) runs on a small event loop of its own: the standard one needs a
# socket pair, which the sandbox does not have.
_CO_COROUTINE = 0x80


class _NoSelector:
    """Stands in for a selector: no file descriptors to watch, so waiting is sleeping."""

    def select(self, timeout=None):
        if timeout:
            import time as _time

            _time.sleep(timeout)
        return []

    def close(self):
        pass


def _new_loop():
    import asyncio

    class _Loop(asyncio.BaseEventLoop):
        def __init__(self):
            super().__init__()
            self._selector = _NoSelector()

        def _process_events(self, event_list):
            pass

        def _write_to_self(self):
            pass

    return _Loop()


# A line that starts a statement that is not an expression: a keyword that only starts
# statements, a decorator, or an assignment to names, attributes or one subscript.
_STATEMENT_START = re.compile(
    r"(?:def|class|if|elif|else|for|while|with|try|except|finally|import|from|return|raise"
    r"|pass|break|continue|del|global|nonlocal|assert|async)\b|@"
    r"|[A-Za-z_][\w.]*(?:\s*,\s*\*?[A-Za-z_][\w.]*)*\s*(?:\[[^\]\n]*\])?\s*"
    r"(?:[-+*/%&|^@]|//|\*\*|>>|<<)?=(?!=)"
)


def _compile_fast(code, filename, lines=None):
    """Compile a step straight from its source, without the AST round trip (`ast.parse` builds
    Python objects for every node and `compile` converts them back: a third of a short step's
    time in the guest). Returns `(body, last)` as `_compile_ast` does, or None when the step
    does not split simply (the AST then decides). `lines`: `code.splitlines(True)`, when the
    caller has them already.

    The last top-level statement starts at the last line that starts in column 0 (blank and
    comment lines aside). That holds when the lines before it compile on their own: a split
    inside brackets, a string or a continued line leaves them incomplete. The statement is an
    expression exactly when it compiles in 'eval' mode. Run one after the other, the two parts
    do what the whole module does; what would differ leaves the step to the AST: a `;` on the
    last line (a second statement), a `__future__` import (it would not reach the second
    part), top-level `await` (one coroutine) and annotations in both parts (one
    `__annotate__`). `tests/repl.rs` checks the split against the AST's over the
    compatibility corpus."""
    if "__future__" in code:
        return None
    if lines is None:
        lines = code.splitlines(True)
    i = len(lines) - 1
    while i >= 0:
        # Not a blank or comment line, nor one that closes brackets (`)` ending a call
        # written over several lines, as formatters write them).
        first = lines[i][:1]
        if first and first not in " \t\r\n\f#)]}":
            break
        i -= 1
    if i < 0:
        return None
    tail = "".join(lines[i:])
    if ";" in tail:
        return None
    pad = "\n" * i
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    try:
        if _STATEMENT_START.match(tail):
            body_tail, last = compile(pad + tail, filename, "exec", flags=flags), None
        else:
            body_tail, last = None, compile(pad + tail, filename, "eval", flags=flags)
        head = compile("".join(lines[:i]), filename, "exec", flags=flags) if i else None
    except (SyntaxError, ValueError):
        return None
    body = [c for c in (head, body_tail) if c is not None]
    if any(c.co_flags & _CO_COROUTINE for c in body):
        return None  # top-level await: the body runs as one coroutine, as the AST path makes it
    if sum("__annotate__" in c.co_names for c in body) > 1:
        return None  # annotations in both parts: one module's `__annotate__` must hold them all
    return body, last


def _compile_ast(code, filename):
    """Compile a step through its AST: `(body, last)`, the code objects of its statements
    and, when its last statement is an expression, that expression's (else None). Raises
    SyntaxError (or ValueError) for code that does not compile."""
    tree = ast.parse(code, filename, "exec")
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body.pop().value)
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    body = [compile(tree, filename, "exec", flags=flags)]
    if last is not None:
        last = compile(last, filename, "eval", flags=flags)
    return body, last


def _execute(code, g):
    """Run a compiled body or expression in globals `g`, awaiting it when it awaits."""
    result = eval(code, g)
    if code.co_flags & _CO_COROUTINE:
        import asyncio

        with asyncio.Runner(loop_factory=_new_loop) as runner:
            result = runner.run(result)
    return result


class _Reply(str):
    """A sub-call's answer: a str that can also be awaited (for code written for async REPLs)."""

    __slots__ = ()

    def __await__(self):
        return str(self)
        yield  # noqa: unreachable - makes this a generator


class _Replies(list):
    """Answers of a batch: a list that can also be awaited."""

    __slots__ = ()

    def __await__(self):
        return list(self)
        yield  # noqa: unreachable - makes this a generator


class _State:
    step = 0
    # Whether `random` has been seeded from the sandbox's randomness (see `_run`).
    seeded = False


_state = _State()


def _run(code, g, state):
    """Run one step of `code` in globals `g` (the REPL's, or scratch ones for the warm-up),
    counting it in `state`."""
    if not state.seeded:
        # `random` was seeded when the guest was built: seed it from the sandbox's own
        # randomness (seeded by the host), so REPLs differ and a rebuilt REPL draws the same.
        # At the first step, not at init: an instance made ahead of time (the host's warm
        # pool) gets its seed when it is taken.
        random.seed(os.urandom(32))
        state.seeded = True
    state.step += 1
    rlm_fastre.new_step()
    filename = f"{_STEP_PREFIX}{state.step}>"
    out = _CappedStream(_settings.max_output_bytes, 1)
    err = _CappedStream(_settings.max_output_bytes, 2)
    _finish.value = None
    error = None
    saved = (sys.stdout, sys.stderr)
    sys.stdout, sys.stderr = out, err
    try:
        lines = code.splitlines(True)
        compiled = _compile_fast(code, filename, lines)
        if compiled is None:
            try:
                compiled = _compile_ast(code, filename)
            except (SyntaxError, ValueError) as e:
                error = _clean("".join(traceback.format_exception_only(type(e), e)))
        if compiled is not None:
            body, last = compiled
            linecache.cache[filename] = (len(code), None, lines, filename)
            for part in body:
                _execute(part, g)
            if last is not None:
                value = _execute(last, g)
                if value is not None:
                    g["_"] = value
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
        out.flush()
        err.flush()
    final = _finish.value
    if final is None:
        ans = g.get("answer")
        if isinstance(ans, dict) and ans.get("ready"):
            content = ans.get("content")
            final = content if isinstance(content, str) else str(content)
    try:
        _install_names(g)
    except BaseException as e:  # noqa: BLE001
        error = (error or "") + f"\n(the REPL could not restore its names: {type(e).__name__})"
    return _repl.StepResult(
        # What the step printed went to the host's pipes as it was printed.
        stdout="",
        stderr="",
        stdout_dropped=out.dropped,
        stderr_dropped=err.dropped,
        error=error,
        final_answer=None if final is None else _clean(final),
    )


# Steps the warm-up runs in scratch globals: the kinds of code model code sends (imports,
# definitions, comprehensions, regex, json, string work, printing, a displayed value, an error,
# an answer), so that the scaffold's and the interpreter's first-time work is done.
_WARM_UP_STEPS = (
    "x = 1",
    "import re, json, math, collections",
    "def f(v, k=2):\n    return [w * k for w in v if w]\n\n\nclass P:\n"
    "    def __init__(self, n):\n        self.n = n\n\n\np = P(f([1, 0, 3]))",
    "rows = [{'i': i, 's': f'item {i}'} for i in range(50)]\n"
    "rows.sort(key=lambda r: -r['i'])\nby = collections.Counter(r['i'] % 3 for r in rows)",
    "text = 'Alpha beta 12, gamma 345.\\nDelta 6 epsilon'\nlines = text.splitlines()\n"
    "parts = [l.strip().lower().split() for l in lines]\nnums = re.findall(r'\\d+', text)\n"
    "m = re.search(r'(\\w+) (\\d+)', text)\nhit = m.group(1) if m else None",
    "doc = json.loads(json.dumps({'a': [1, 2.5, None, True], 'b': 'x'}))\n"
    "out = ', '.join(f'{k}={v!r}' for k, v in sorted(doc.items()))\nprint(out[:20], len(out))",
    "for i, (a, b) in enumerate(zip(nums, parts)):\n    if i > 1:\n        break\n"
    "    print(i, a, b[:1], math.sqrt(i))",
    "{'n': len(rows), 'top': rows[0], 'hit': hit, 'x': x}",
    "missing_name + 1",
    "def g(:\n    pass",
    "FINAL(f'{len(rows)} rows')",
)


def _warm_up(slot):
    """Run the warm-up steps in scratch globals, and load context `slot` (when given) both
    ways, keeping nothing: see the `warm-up` export."""
    state = _State()
    state.seeded = True
    scratch = {"__name__": "__main__", "__builtins__": builtins}
    _install_names(scratch)
    try:
        for code in _WARM_UP_STEPS:
            _run(code, scratch, state)
        if slot is not None:
            node = _ctx.root(slot)
            whole = _materialize(node, True, False)
            lazy = _materialize(node, False, True)
            _ = (len(lazy), lazy[:8], lazy.find("a"), whole.find("a"), whole.splitlines())
    finally:
        _finish.value = None
        for i in range(1, state.step + 1):
            linecache.cache.pop(f"{_STEP_PREFIX}{i}>", None)
        scratch.clear()


class Repl(exports.Repl):
    """The exported REPL interface."""

    def init(self, options):
        _settings.lazy_threshold = int(options.lazy_threshold_chars)
        _settings.max_output_bytes = int(options.max_output_bytes)
        _settings.read_chunk = max(1, int(options.read_chunk_chars))
        if options.tools:
            _bind_tools(options.tools)
            _install_names()

    def attach_context(self, slot, name, whole):
        try:
            node = _ctx.root(slot)
            _roots[name] = node
            value = _materialize(node, bool(whole), not whole)
            _globals[name] = value
            rlm_checkpoint.register_context(name, value)
            rlm_fastre.register(node, value)
            if name == "context":
                # The official rlm's name for the first context.
                _roots["context_0"] = node
                _globals["context_0"] = value
                rlm_checkpoint.register_context("context_0", value)
            if isinstance(value, (LazyText, _LazyContainer)):
                _lazy_re.install()
        except Err:
            raise
        except BaseException as e:  # noqa: BLE001
            raise Err(f"could not load {name}: {type(e).__name__}: {e}") from None

    def define(self, name, value):
        if not name.isidentifier() or name in _SCAFFOLD or name.startswith("__"):
            raise Err(f"cannot define {name!r}: not a free Python name")
        try:
            _globals[name] = json.loads(value)
        except BaseException as e:  # noqa: BLE001
            raise Err(f"could not define {name}: {type(e).__name__}: {e}") from None

    def checkpoint(self, max_bytes):
        try:
            return rlm_checkpoint.save(_globals, _state.step, int(max_bytes), _FIXED)
        except BaseException as e:  # noqa: BLE001 - a model's hook may raise anything
            raise Err(f"{type(e).__name__}: {e}") from None

    def restore(self, state):
        try:
            _state.step = rlm_checkpoint.load(_globals, bytes(state), _FIXED)
            _state.seeded = True
        except BaseException as e:  # noqa: BLE001
            raise Err(f"{type(e).__name__}: {e}") from None
        _install_names()

    def warm_up(self, slot):
        try:
            _warm_up(slot)
        except BaseException as e:  # noqa: BLE001
            raise Err(f"warm-up failed: {type(e).__name__}: {e}") from None

    def exec(self, code):
        try:
            return _run(code, _globals, _state)
        except BaseException as e:  # noqa: BLE001 - never let an exception escape the export
            return _repl.StepResult(
                stdout="", stderr="", stdout_dropped=0, stderr_dropped=0,
                error=f"internal REPL error: {type(e).__name__}: {e}", final_answer=None,
            )


# Last: every object that exists now exists, at the same place, in every instance.
rlm_checkpoint.register_known()
