"""Constructors and copies of frozen dataclasses for the hot paths.

Rules of this file:
- A frozen dataclass's generated ``__init__`` sets each field through ``object.__setattr__``
  and takes keywords: about 0.1 µs a field, interpreted even in a compiled module, since
  ``dataclasses`` generates it at import.
- A compiled class whose construction is hot declares ``init=False`` and writes its own
  ``__init__`` with plain assignments (``self.x = x``): compiled, that is a native
  constructor (about 0.02 µs for a frozen one of four fields against 0.6 µs for the
  dataclass's interpreted one), since compiled code sets a native class's attributes directly.
  Interpreted, a frozen dataclass refuses those assignments; ``assigning_init`` (called after
  the class, a no-op compiled) gives it an ``__init__`` with the same signature that sets the
  slots directly, through their descriptors.
- ``trusted_replacer`` is ``dataclasses.replace`` for values already known to be valid (about
  1 µs instead of 4 for a dataclass of 17 fields): a copy with the named fields changed, the
  rest shared, without ``__post_init__``. The copy is the same class, as immutable and as
  comparable as one built by its ``__init__``. A compiled class (``scripts/build_native.py``)
  has no slot descriptors to set and cannot be made with ``object.__new__``; for it the
  replacer calls its constructor, which validates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Keep:
    """The replacers' default (this module's and ``Generation.evolve``): keep the field as it is."""

    def __repr__(self) -> str:
        return "<keep>"


KEEP = Keep()


def trusted_replacer(cls: type[T]) -> Callable[..., T]:
    """``evolve(instance, field=value, ...)``: a copy of ``instance`` (of the frozen, slotted
    dataclass ``cls``) with the given fields changed; an unknown field is a ``TypeError``, as
    for any keyword a function does not take. Interpreted, it sets the copy's slots directly;
    for a compiled class it calls the constructor."""
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    keywords = ", ".join(f"{name}=_KEEP" for name in fields)
    values = [f"_o.{name} if {name} is _KEEP else {name}" for name in fields]
    namespace: dict[str, Any] = {"_KEEP": KEEP, "_new": object.__new__, "_cls": cls}
    lines = [f"def evolve(_o, *, {keywords}):"]
    if _compiled(cls):
        call = ", ".join(f"{name}={value}" for name, value in zip(fields, values, strict=True))
        lines.append(f"    return _cls({call})")
    else:
        lines.append("    o = _new(_cls)")
        for index, (name, value) in enumerate(zip(fields, values, strict=True)):
            namespace[f"_set{index}"] = getattr(cls, name).__set__  # the slot's descriptor
            lines.append(f"    _set{index}(o, {value})")
        lines.append("    return o")
    exec("\n".join(lines), namespace)  # generated from field names, as dataclasses does
    evolve: Callable[..., T] = namespace["evolve"]
    evolve.__qualname__ = evolve.__name__ = f"evolve_{cls.__name__}"
    return evolve


def assigning_init(*classes: type[Any]) -> None:
    """Make the own ``__init__`` of each frozen, slotted dataclass in ``classes`` work
    interpreted (module rules); compiled classes are left as they are. Call it right after the
    class, before any instance is made.

    The own ``__init__`` takes every field as a keyword, with the field's default, assigns each
    to its field in order and then calls ``__post_init__`` if the class has one, nothing else (a
    unit test checks each class). Interpreted, it is replaced by one that does the same with
    the slots' setters: the same signature and defaults, read from the own ``__init__``."""
    for cls in classes:
        if not _compiled(cls):
            cls.__init__ = _slot_init(cls, cls.__dict__["__init__"])


def _slot_init(cls: type[Any], own: Callable[..., None]) -> Callable[..., None]:
    code = own.__code__
    names = code.co_varnames[code.co_argcount : code.co_argcount + code.co_kwonlyargcount]
    defaults = own.__kwdefaults__ or {}
    namespace: dict[str, Any] = {}
    parameters = []
    lines = []
    for index, name in enumerate(names):
        if name in defaults:
            namespace[f"_default{index}"] = defaults[name]
            parameters.append(f"{name}=_default{index}")
        else:
            parameters.append(name)
        namespace[f"_set{index}"] = getattr(cls, name).__set__  # the slot's descriptor
        lines.append(f"    _set{index}(self, {name})")
    if hasattr(cls, "__post_init__"):
        lines.append("    self.__post_init__()")
    source = "\n".join([f"def __init__(self, *, {', '.join(parameters)}):", *lines])
    exec(source, namespace)  # generated from the own __init__'s parameter names
    made: Callable[..., None] = namespace["__init__"]
    made.__qualname__ = own.__qualname__
    made.__doc__ = own.__doc__
    return made


def _compiled(cls: type[Any]) -> bool:
    """True for a class compiled to native code (mypyc): it has no slots to set directly, and
    its own ``__init__`` is already as fast as the generated setter."""
    try:
        object.__new__(cls)
    except TypeError:
        return True
    return False
