"""Whole-context regex sweeps on the host, with CPython's results.

Model code sweeps the whole context with `re.findall(pattern, context)`,
`re.finditer(pattern, context)` and `re.search(pattern, context)`. CPython's backtracking engine
can take very long on patterns real models write:
`re.findall(r'.{0,200}(grew up|born|raised).{0,200}', context, re.I)` over 8.4 M characters takes
21 s in the sandbox (8.4 s in native CPython), because it tries 200 characters each way at every
position. The host's linear-time engine (Rust `regex`) finds the same 313 matches, and CPython
confirms them, in 0.04 s.

So when the text is a context that loaded whole as a `str` of at least `MIN_CHARS` characters,
these three functions first translate the pattern into an equivalent Rust pattern,
ask the host for the spans of its leftmost-first, non-overlapping matches, and then have CPython
match the pattern anchored at each span's start. The results are CPython's own `re.Match`
objects. Any doubt falls back to CPython's full sweep:

- the pattern is outside the subset translated exactly: literals, `.`, classes, groups,
  alternation, greedy and lazy repeats, `^`, `\\A`, `\\Z`, `$` under MULTILINE, and `\\b` in an
  ASCII text (no back-references, look-around, atomic groups, possessive repeats, scoped inline
  flags, `\\B`, or `$` without MULTILINE); or it can match the empty string;
- the text has more than 4,096 distinct characters;
- more than `MAX_SPANS` matches (a bound on the memory the spans take);
- the step already made `SWEEPS_PER_STEP` host sweeps (a loop of `re.search` over the context
  must not use up the step's host calls, which model calls need too);
- a compiled pattern's own methods are called (`re.compile(p).findall(context)`: `re.Pattern`
  cannot be wrapped), or the text is a slice or copy of the context;
- CPython does not match at a span's start, or ends elsewhere than the host's match.

Why the translation is exact: every single-character item (a literal, `.`, a class, under
IGNORECASE, DOTALL or ASCII) is replaced by the set of the text's own characters (its alphabet,
from the host) that CPython itself matches with it, tried one by one. Over that alphabet the two
patterns match the same strings at each position, so both engines find the same leftmost starts;
CPython's anchored match checks where each match ends, and supplies the groups. (`\\b` is kept
to ASCII texts: Python's and Rust's Unicode word characters differ.)
"""

import re

from componentize_py_types import Err
from wit_world.imports import context as _ctx

_parser = re._parser
_compiler = re._compiler
_c = re._constants

# Texts shorter than this are swept by CPython alone.
MIN_CHARS = 1 << 16
# More matches than this: CPython sweeps (the host's answer is dropped). The host returns at
# most one more.
MAX_SPANS = 100_000

# Host sweeps one step may make (each is one of the step's host calls).
SWEEPS_PER_STEP = 1000
_sweeps_left = [SWEEPS_PER_STEP]

# The whole contexts that qualify, by id: (host node, the str).
_texts = {}
# Their alphabets (None: too many characters), by id.
_alphabets = {}
# Rust pattern (or None: not translatable) per (pattern, flags).
_translated = {}
_TRANSLATED_MAX = 256
# The set of a single-character item, per (item, flags, alphabet): most patterns are made of the
# same few letters and classes, and trying 128 characters takes about 0.1 ms.
_sets = {}
_SETS_MAX = 4096

_ASCII = "".join(chr(i) for i in range(128))

_real_findall = re.findall
_real_finditer = re.finditer
_real_search = re.search
_real_compile = re.compile


class _Untranslatable(Exception):
    pass


def _host_match(match, pos):
    """Rebuild a `_HostMatch` (from a checkpoint)."""
    return _HostMatch(match, pos)


class _HostMatch:
    """A match the host found, as CPython's own sweep gives it.

    CPython confirms each span with `compiled.match(string, start)`, whose `re.Match` says
    `pos == start`; a sweep from the text's start says `pos == 0`. This wraps that match with the
    sweep's `pos`, and is otherwise the match itself: every attribute and method, its `repr`,
    `isinstance(m, re.Match)` and `m.__class__` (only `type(m)` tells them apart)."""

    __slots__ = ("_m", "_pos")

    def __init__(self, match, pos):
        self._m = match
        self._pos = pos

    @property
    def __class__(self):
        return re.Match

    @property
    def pos(self):
        return self._pos

    endpos = property(lambda self: self._m.endpos)
    re = property(lambda self: self._m.re)
    string = property(lambda self: self._m.string)
    lastindex = property(lambda self: self._m.lastindex)
    lastgroup = property(lambda self: self._m.lastgroup)
    regs = property(lambda self: self._m.regs)

    def group(self, *groups):
        return self._m.group(*groups)

    def groups(self, default=None):
        return self._m.groups(default)

    def groupdict(self, default=None):
        return self._m.groupdict(default)

    def start(self, group=0):
        return self._m.start(group)

    def end(self, group=0):
        return self._m.end(group)

    def span(self, group=0):
        return self._m.span(group)

    def expand(self, template):
        return self._m.expand(template)

    def __getitem__(self, group):
        return self._m[group]

    def __bool__(self):
        return True

    def __repr__(self):
        return repr(self._m)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return _host_match, (self._m, self._pos)

    __class_getitem__ = classmethod(lambda cls, item: re.Match[item])


def install():
    """Put the three functions into `re`, once, when the guest starts: before any other patch of
    `re` (the lazy contexts' wrappers, which then call these for every `str`), so that contexts
    may be attached in any order. For a text that is not registered they are `re`'s own."""
    re.findall = findall
    re.finditer = finditer
    re.search = search


def register(node, value):
    """Let sweeps of `value`, the whole text of context node `node`, run on the host (when it is
    a `str` long enough to gain from it)."""
    if type(value) is str and len(value) >= MIN_CHARS:
        _texts[id(value)] = (node, value)


def new_step():
    """A step starts: it may make `SWEEPS_PER_STEP` host sweeps."""
    _sweeps_left[0] = SWEEPS_PER_STEP


def _alphabet(entry):
    """The distinct characters of a registered text (all of ASCII for an ASCII text), or None."""
    node, text = entry
    if text.isascii():
        return _ASCII
    key = id(text)
    if key not in _alphabets:
        try:
            _alphabets[key] = _ctx.alphabet(node)
        except Err:
            return None
    return _alphabets[key]


def _char_set(item, state, flags, alphabet):
    """The characters of `alphabet` a single-character item matches, as CPython matches them."""
    key = (repr(item), flags, alphabet)
    found = _sets.get(key)
    if found is None:
        one = _parser.SubPattern(state, [item])
        compiled = _compiler.compile(one, flags)
        found = [ch for ch in alphabet if compiled.fullmatch(ch)]
        if len(_sets) >= _SETS_MAX:
            _sets.clear()
        _sets[key] = found
    return found


def _class(chars):
    if not chars:
        raise _Untranslatable("a class that matches no character of the text")
    codes = [ord(ch) for ch in chars]
    parts = []
    start = prev = codes[0]
    for code in codes[1:] + [None]:
        if code is not None and code == prev + 1:
            prev = code
            continue
        parts.append(f"\\x{{{start:02X}}}" if start == prev else f"\\x{{{start:02X}}}-\\x{{{prev:02X}}}")
        if code is not None:
            start = prev = code
    return "[" + "".join(parts) + "]"


_SINGLE = (_c.LITERAL, _c.NOT_LITERAL, _c.ANY, _c.IN)


def _emit(sub, state, flags, alphabet):
    out = []
    for op, av in sub:
        if op in _SINGLE:
            out.append(_class(_char_set((op, av), state, flags, alphabet)))
        elif op is _c.SUBPATTERN:
            group, add, remove, inner = av
            if add or remove:
                raise _Untranslatable("scoped inline flags")
            body = _emit(inner, state, flags, alphabet)
            out.append(f"(?:{body})" if group is None else f"({body})")
        elif op is _c.BRANCH:
            out.append("(?:" + "|".join(_emit(b, state, flags, alphabet) for b in av[1]) + ")")
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT):
            lo, hi, inner = av
            bound = f"{{{lo},}}" if hi == _c.MAXREPEAT else f"{{{lo},{hi}}}"
            lazy = "?" if op is _c.MIN_REPEAT else ""
            out.append(f"(?:{_emit(inner, state, flags, alphabet)}){bound}{lazy}")
        elif op is _c.AT:
            out.append(_anchor(av, flags, alphabet))
        else:
            raise _Untranslatable(str(op))
    return "".join(out)


def _anchor(at, flags, alphabet):
    multiline = flags & re.MULTILINE
    if at is _c.AT_BEGINNING:
        return "(?m:^)" if multiline else r"\A"
    if at is _c.AT_BEGINNING_STRING:
        return r"\A"
    if at is _c.AT_END and multiline:
        return "(?m:$)"
    if at is _c.AT_END_STRING:
        return r"\z"
    if at is _c.AT_BOUNDARY and alphabet.isascii():
        return r"(?-u:\b)"
    raise _Untranslatable(str(at))


def translate(pattern, flags, alphabet=_ASCII):
    """The Rust pattern that matches exactly what `pattern` matches in a text made of the
    characters of `alphabet`, or None."""
    key = (pattern, flags, alphabet)
    if key in _translated:
        return _translated[key]
    rust = None
    try:
        parsed = _parser.parse(pattern, flags)
        all_flags = flags | parsed.state.flags
        if parsed.getwidth()[0] > 0 and not all_flags & (re.LOCALE | re.DEBUG):
            rust = _emit(parsed, parsed.state, all_flags, alphabet)
    except (_Untranslatable, re.error, RecursionError, ValueError, TypeError):
        rust = None
    if len(_translated) >= _TRANSLATED_MAX:
        _translated.clear()
    _translated[key] = rust
    return rust


def _matches(pattern, string, flags, first_only=False):
    """CPython's matches of `pattern` over all of `string` (or only its first), found by the
    host, or None when the host cannot find them exactly (CPython then sweeps)."""
    entry = _texts.get(id(string))
    if entry is None or entry[1] is not string or _sweeps_left[0] <= 0:
        return None
    try:
        compiled = _real_compile(pattern, flags)
    except Exception:  # noqa: BLE001 - the real function raises the same, with its message
        return None
    if not isinstance(compiled.pattern, str):
        return None
    alphabet = _alphabet(entry)
    if alphabet is None:
        return None
    rust = translate(compiled.pattern, compiled.flags, alphabet)
    if rust is None:
        return None
    _sweeps_left[0] -= 1
    try:
        flat = _ctx.spans(entry[0], rust, 1 if first_only else MAX_SPANS + 1)
    except Err:
        return None
    if flat is None or len(flat) > 2 * MAX_SPANS:
        return None
    found = []
    match = compiled.match
    for i in range(0, len(flat), 2):
        m = match(string, flat[i])
        if m is None or m.end() != flat[i + 1]:
            return None
        found.append(_HostMatch(m, 0) if flat[i] else m)
    return compiled, found


def findall(pattern, string, flags=0):
    done = _matches(pattern, string, flags) if id(string) in _texts else None
    if done is None:
        return _real_findall(pattern, string, flags)
    compiled, found = done
    groups = compiled.groups
    if groups == 0:
        return [m.group() for m in found]
    if groups == 1:
        return [m.group(1) or "" for m in found]
    return [m.groups("") for m in found]


def finditer(pattern, string, flags=0):
    done = _matches(pattern, string, flags) if id(string) in _texts else None
    if done is None:
        return _real_finditer(pattern, string, flags)
    return iter(done[1])


def search(pattern, string, flags=0):
    if id(string) not in _texts:
        return _real_search(pattern, string, flags)
    done = _matches(pattern, string, flags, first_only=True)
    if done is None:
        return _real_search(pattern, string, flags)
    found = done[1]
    return found[0] if found else None


findall.__doc__ = _real_findall.__doc__
finditer.__doc__ = _real_finditer.__doc__
search.__doc__ = _real_search.__doc__
