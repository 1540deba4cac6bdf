"""Positional constructors for frozen dataclasses, for values already known to be valid.

Rules of this file:
- A frozen dataclass's ``__init__`` sets each field through ``object.__setattr__`` and takes
  keywords: about 0.1 µs a field, 2-4 µs for a parsed CCR, on every request. ``trusted_builder``
  makes a function that sets the slots directly (about 0.04 µs a field) and skips
  ``__post_init__``. It is for the hot paths only, where the values come from code that has
  already checked them (a parser that read them from fixed-width fields, the core's own
  arithmetic); everything else builds the dataclass as usual, validated.
- The instance is the same class, as immutable and as comparable as one built by its
  ``__init__``; fields the builder does not take get their defaults.
- ``trusted_replacer`` is ``dataclasses.replace`` on the same terms (about 1 µs instead of 4 for
  a dataclass of 17 fields): a copy with the named fields changed, the rest shared.
- A class compiled with mypyc (``scripts/build_native.py``) has no slot descriptors to set and
  cannot be made with ``object.__new__``; for it both helpers call its constructor, which
  validates, and costs about what the generated setter costs interpreted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def trusted_builder(cls: type[T], *names: str) -> Callable[..., T]:
    """``build(value, ...)`` for the fields ``names`` of the frozen, slotted dataclass ``cls``,
    in that order (all fields, in declaration order, when none are named)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    chosen = list(names) if names else list(fields)
    unknown = [n for n in chosen if n not in fields]
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {unknown}")
    without = [n for n, f in fields.items() if n not in chosen and not _has_default(f)]
    if without:
        raise TypeError(f"{cls.__name__}.{without[0]} has no default: the builder must take it")
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    if _compiled(cls):
        call = ", ".join(f"{name}={name}" for name in chosen)
        lines = [f"def build({', '.join(chosen)}):", f"    return _cls({call})"]
        made: Callable[..., T] = _made(lines, namespace, "build", f"trusted_{cls.__name__}")
        return made
    lines = [f"def build({', '.join(chosen)}):", "    o = _new(_cls)"]
    for index, name in enumerate(fields):
        setter = getattr(cls, name).__set__  # the slot's member descriptor
        namespace[f"_set{index}"] = setter
        if name in chosen:
            lines.append(f"    _set{index}(o, {name})")
            continue
        spec = fields[name]
        if spec.default is not dataclasses.MISSING:
            namespace[f"_default{index}"] = spec.default
            lines.append(f"    _set{index}(o, _default{index})")
        elif spec.default_factory is not dataclasses.MISSING:
            namespace[f"_factory{index}"] = spec.default_factory
            lines.append(f"    _set{index}(o, _factory{index}())")
    lines.append("    return o")
    build: Callable[..., T] = _made(lines, namespace, "build", f"trusted_{cls.__name__}")
    return build


class _Keep:
    """The replacer's default: keep the field as it is."""

    def __repr__(self) -> str:
        return "<keep>"


_KEEP = _Keep()


def trusted_replacer(cls: type[T]) -> Callable[..., T]:
    """``evolve(instance, field=value, ...)``: a copy of ``instance`` (of the frozen, slotted
    dataclass ``cls``) with the given fields changed; an unknown field is a ``TypeError``, as
    for any keyword a function does not take."""
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_KEEP": _KEEP}
    keywords = ", ".join(f"{name}=_KEEP" for name in fields)
    if _compiled(cls):
        call = ", ".join(f"{n}=_o.{n} if {n} is _KEEP else {n}" for n in fields)
        lines = [f"def evolve(_o, *, {keywords}):", f"    return _cls({call})"]
        native: Callable[..., T] = _made(lines, namespace, "evolve", f"evolve_{cls.__name__}")
        return native
    lines = [f"def evolve(_o, *, {keywords}):", "    o = _new(_cls)"]
    for index, name in enumerate(fields):
        namespace[f"_set{index}"] = getattr(cls, name).__set__
        lines.append(f"    _set{index}(o, _o.{name} if {name} is _KEEP else {name})")
    lines.append("    return o")
    evolve: Callable[..., T] = _made(lines, namespace, "evolve", f"evolve_{cls.__name__}")
    return evolve


def _has_default(spec: dataclasses.Field[Any]) -> bool:
    return (
        spec.default is not dataclasses.MISSING or spec.default_factory is not dataclasses.MISSING
    )


def _compiled(cls: type[Any]) -> bool:
    """True for a class compiled to native code (mypyc): it has no slots to set directly, and
    its own ``__init__`` is already as fast as the generated setter."""
    try:
        object.__new__(cls)
    except TypeError:
        return True
    return False


def _made(lines: list[str], namespace: dict[str, Any], name: str, qualname: str) -> Any:
    exec("\n".join(lines), namespace)  # generated from field names, as dataclasses does
    made = namespace[name]
    made.__qualname__ = made.__name__ = qualname
    return made
