"""Checkpoints of the REPL: its variables as bytes, restored into a fresh instance.

After a trap the host rebuilds the REPL in a fresh instance (a trapped wasmtime store can never
run again). Replaying every earlier step costs as much as the whole history; restoring a
checkpoint costs as much as the state. A checkpoint is a pickle of the REPL's globals with:

- objects that existed when the guest was built (modules, their functions, classes and
  singletons such as `dataclasses.MISSING`) saved as references to the same objects in the new
  instance;
- names still bound to the REPL's own functions and pre-imported modules saved by name only
  (most of a young REPL's globals; pickling them took two thirds of its checkpoint);
- the contexts saved as references (they are attached again from the host, never copied);
- functions, lambdas, closures and classes defined by model code saved by value (their code
  objects), bound to the new instance's REPL globals, so that they keep seeing later changes to
  the globals as the originals did;
- `re.Match` objects found again in their string (and checked).

What cannot be restored faithfully makes the checkpoint fail (generators, frames, an exception
that keeps its traceback, enums defined by model code, ...): the host then replays the journal
instead, as it did before checkpoints existed. Changes that model code made to the standard
library's modules themselves are not kept.
"""

import enum
import io
import linecache
import marshal
import pickle
import random
import re
import sys
import types

_PROTOCOL = 5


class CheckpointError(Exception):
    """The REPL's state cannot be saved (or restored) faithfully."""


# --------------------------------------------------------------------------------------------
# Objects that exist in every instance
# --------------------------------------------------------------------------------------------

# Every object reachable as a module attribute when the guest was built (other than plain
# values), in a fixed order: the same index names the same object in every instance (the
# guest's memory image is the same). The list also pins them, so their ids are never reused.
_KNOWN = []
_KNOWN_IDS = {}
_PLAIN = (str, int, float, complex, bytes, bool, type(None), tuple, list, dict, set, frozenset)

# The contexts attached to this REPL, by Python name (pinned here, so ids are not reused).
_CONTEXTS = {}


def register_known():
    """Record the objects that exist at build time (call once, at the end of the build-time
    imports). Plain values (strings, numbers, containers) are saved by value instead."""
    for name in sorted(k for k, m in sys.modules.items() if m is not None):
        mod = sys.modules[name]
        for obj in (mod, *vars(mod).values()):
            if type(obj) in _PLAIN or id(obj) in _KNOWN_IDS:
                continue
            _KNOWN_IDS[id(obj)] = len(_KNOWN)
            _KNOWN.append(obj)


def register_context(name, value):
    """Record that the context called `name` is `value`: checkpoints refer to it by name, and
    it is attached again (not copied) when one is restored."""
    _CONTEXTS[name] = value


def _context_memo():
    """The contexts as the first entries of a pickle's memo: (name, object) pairs, one per
    distinct object. Every reference to a context is then saved as a reference to its memo
    entry, without a Python call per saved object (as `persistent_id` would make)."""
    seen = set()
    pairs = []
    for name in sorted(_CONTEXTS):
        value = _CONTEXTS[name]
        if id(value) not in seen and not isinstance(value, (int, float, bool, type(None))):
            seen.add(id(value))
            pairs.append((name, value))
    return pairs


def _primed(names):
    """A pickle stream that puts the contexts `names` into an unpickler's memo at 0, 1, ...:
    read it with the same unpickler before the state (setting `Unpickler.memo` does not make
    later memo entries go after them)."""
    out = [b"\x80\x02"]  # PROTO 2
    for i, name in enumerate(names):
        raw = name.encode()
        # BINUNICODE name, BINPERSID, LONG_BINPUT i, POP
        out.append(b"X" + len(raw).to_bytes(4, "little") + raw + b"Q")
        out.append(b"r" + i.to_bytes(4, "little") + b"0")
    out.append(b"N.")  # NONE, STOP
    return b"".join(out)

# --------------------------------------------------------------------------------------------
# Model-defined functions, cells and classes, by value
# --------------------------------------------------------------------------------------------


def _new_cell():
    return types.CellType()


def _set_cell(cell, state):
    if state:
        cell.cell_contents = state[0]
    return cell


def _new_function(code, where, name, cells):
    globals_ = _repl_globals() if where is None else vars(sys.modules[where])
    return types.FunctionType(marshal.loads(code), globals_, name, None, cells or None)


_FUNCTION_ATTRS = ("__defaults__", "__kwdefaults__", "__qualname__", "__module__", "__doc__",
                   "__dict__", "__type_params__")


def _set_function(f, state):
    for attr, value in state.items():
        if attr == "__annotate__":
            f.__annotate__ = value
        elif attr == "__dict__":
            f.__dict__.update(value)
        else:
            setattr(f, attr, value)
    return f


def _new_class(meta, name, bases, slots):
    ns = {} if slots is None else {"__slots__": slots}
    return types.new_class(name, bases, {"metaclass": meta}, lambda d: d.update(ns))


def _set_class(cls, attrs):
    for attr, value in attrs.items():
        setattr(cls, attr, value)
    return cls


# Class attributes that the class's creation makes itself.
_CLASS_SKIP = frozenset({"__dict__", "__weakref__", "__slots__", "_abc_impl",
                         "__static_attributes__", "__firstlineno__"})


# --------------------------------------------------------------------------------------------
# Matches, found again
# --------------------------------------------------------------------------------------------

_scanners = {}


def _rematch(pattern, string, pos, endpos, regs):
    """The match of `pattern` in `string` whose groups have the spans `regs`: the one a search
    (or `finditer`) from `pos` found, else the `fullmatch`. Matches of one `finditer` are found
    by one scan."""
    start = regs[0][0]
    key = (id(pattern), id(string), pos, endpos)
    entry = _scanners.get(key)
    if entry is None or entry[1] is None or entry[1].start() > start:
        entry = [pattern.scanner(string, pos, endpos), None]
        _scanners[key] = entry
    m = entry[1]
    while True:
        if m is not None:
            if m.regs == regs:
                return m
            if m.start() > start:
                break
        m = entry[0].search()
        entry[1] = m
        if m is None:
            break
    m = pattern.fullmatch(string, pos, endpos)
    if m is not None and m.regs == regs:
        return m
    raise CheckpointError("a saved regular-expression match was not found again")


def _wrapped(kind, func):
    return kind(func)


# --------------------------------------------------------------------------------------------
# Pickling
# --------------------------------------------------------------------------------------------

_globals_ref = [None]


def _repl_globals():
    return _globals_ref[0]


class _Pickler(pickle.Pickler):
    def __init__(self, file):
        super().__init__(file, protocol=_PROTOCOL)
        self.files = set()

    def reducer_override(self, obj):
        index = _KNOWN_IDS.get(id(obj))
        if index is not None:
            if id(obj) in _OWN:
                return NotImplemented  # this module's rebuilders: saved by name
            return _known, (index,)
        t = type(obj)
        if t is types.FunctionType:
            return self._function(obj)
        if t is types.CellType:
            try:
                return _new_cell, (), (obj.cell_contents,), None, None, _set_cell
            except ValueError:
                return _new_cell, ()
        if isinstance(obj, type):
            return self._class(obj)
        if t is types.ModuleType:
            if sys.modules.get(obj.__name__) is obj:
                return _module, (obj.__name__,)
            raise CheckpointError(f"module object {obj.__name__!r} is not importable")
        if t is re.Match:
            return _rematch, (obj.re, obj.string, obj.pos, obj.endpos, obj.regs)
        if t is classmethod or t is staticmethod:
            return _wrapped, (t, obj.__func__)
        if t is property:
            return property, (obj.fget, obj.fset, obj.fdel, obj.__doc__)
        if isinstance(obj, BaseException) and obj.__traceback__ is not None:
            raise CheckpointError(f"a kept {t.__name__} holds its traceback")
        if t is types.CodeType:
            return marshal.loads, (marshal.dumps(obj),)
        return NotImplemented

    def _function(self, f):
        g = f.__globals__
        if g is _repl_globals():
            where = None
        else:
            where = g.get("__name__")
            mod = sys.modules.get(where) if isinstance(where, str) else None
            if mod is None or vars(mod) is not g:
                raise CheckpointError(f"function {f.__qualname__!r} has foreign globals")
        code = f.__code__
        self.files.add(code.co_filename)
        state = {a: getattr(f, a) for a in _FUNCTION_ATTRS if hasattr(f, a)}
        if not state.get("__dict__"):
            state.pop("__dict__", None)
        annotate = getattr(f, "__annotate__", None)
        if annotate is not None:
            state["__annotate__"] = annotate
        elif getattr(f, "__annotations__", None):
            state["__annotations__"] = f.__annotations__
        return (_new_function, (marshal.dumps(code), where, f.__name__, f.__closure__),
                state, None, None, _set_function)

    def _class(self, cls):
        if cls.__module__ != "__main__":
            return NotImplemented
        meta = type(cls)
        if isinstance(cls, enum.EnumType):
            raise CheckpointError(f"enum {cls.__qualname__!r} cannot be saved")
        slots = cls.__dict__.get("__slots__")
        if isinstance(slots, str):
            slots = (slots,)
        skip = set(_CLASS_SKIP)
        if slots is not None:
            skip.update(slots)
        attrs = {}
        for k, v in cls.__dict__.items():
            if k in skip:
                continue
            if type(v) in (types.GetSetDescriptorType, types.MemberDescriptorType):
                continue
            attrs[k] = v
        for k in ("__qualname__", "__module__"):
            attrs[k] = getattr(cls, k)
        # Methods and class attributes may refer to the class: it is made (and memoized) first,
        # its attributes set after.
        return (_new_class, (meta, cls.__name__, cls.__bases__,
                             None if slots is None else tuple(slots)),
                attrs, None, None, _set_class)


def _module(name):
    return sys.modules[name]


def _known(index):
    return _KNOWN[index]


# The functions that rebuild objects (saved by name, like any importable function).
_OWN = frozenset(id(f) for f in (_known, _new_cell, _set_cell, _new_function, _set_function,
                                 _new_class, _set_class, _rematch, _wrapped, _module))


class _Unpickler(pickle.Unpickler):
    def persistent_load(self, pid):
        if pid in _CONTEXTS:
            return _CONTEXTS[pid]
        raise CheckpointError(f"the checkpoint refers to context {pid!r}, which this REPL lacks")


class _CappedBuffer(io.BytesIO):
    """Bytes up to a cap: pickling stops as soon as the state is known to be too large (pickle
    writes in frames of about 64 KiB)."""

    def __init__(self, cap):
        super().__init__()
        self.cap = cap

    def write(self, b):
        if self.tell() + len(b) > self.cap:
            raise CheckpointError(f"the state is over the {self.cap}-byte cap")
        return super().write(b)


_ABSENT = object()


def save(repl_globals, step, max_bytes, fixed):
    """The REPL's state as bytes, at most `max_bytes` of them. Names bound to their value in
    `fixed` (the REPL's own functions and pre-imported modules, the same objects in every
    instance) are saved by name only."""
    _globals_ref[0] = repl_globals
    order = [k for k in repl_globals if k != "__builtins__"]
    names = {
        k: v
        for k, v in repl_globals.items()
        if k != "__builtins__" and fixed.get(k, _ABSENT) is not v
    }
    buf = _CappedBuffer(max_bytes)
    contexts = _context_memo()
    pickle.Pickler(buf, protocol=_PROTOCOL).dump([name for name, _ in contexts])
    pickler = _Pickler(buf)
    pickler.memo = {id(value): (i, value) for i, (_, value) in enumerate(contexts)}
    try:
        pickler.dump(names)
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError("the REPL's data is nested too deeply to save") from None
    except Exception as e:  # noqa: BLE001 - whatever pickling (or a model's hook) raised
        raise CheckpointError(f"{type(e).__name__}: {e}") from None
    files = {f: linecache.cache[f] for f in pickler.files if f in linecache.cache}
    meta = {"step": step, "random": random.getstate(), "files": files, "order": order}
    # The same pickler: one unpickler reads both, its memo going on from one to the next.
    pickler.dump(meta)
    return buf.getvalue()


def load(repl_globals, data, fixed):
    """Put the state `save` produced into `repl_globals` (a fresh REPL with the same contexts
    attached and the same `fixed` names); returns the step counter it had."""
    _globals_ref[0] = repl_globals
    _scanners.clear()
    buf = io.BytesIO(data)
    try:
        contexts = pickle.Unpickler(buf).load()
        rest = buf.read()
        unpickler = _Unpickler(io.BytesIO(_primed(contexts) + rest))
        unpickler.load()
        names = unpickler.load()
        meta = unpickler.load()
        values = [(k, names[k] if k in names else fixed[k]) for k in meta["order"]]
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the unpickling raised
        raise CheckpointError(f"{type(e).__name__}: {e}") from None
    finally:
        _scanners.clear()
    builtins_ = repl_globals.get("__builtins__")
    repl_globals.clear()
    if builtins_ is not None:
        repl_globals["__builtins__"] = builtins_
    repl_globals.update(values)
    random.setstate(meta["random"])
    linecache.cache.update(meta["files"])
    return meta["step"]
