"""Stage names to classes, imported lazily so heavy dependencies load only when used.

Stages are found through Python entry points in the ``blift.stages`` group: blift declares its
own in ``pyproject.toml``, and a third-party package adds a source or a stage by declaring one in
its own metadata and installing itself. ``BLIFT_STAGES="name=module:Class;..."`` adds stages for
one run (worker processes inherit it; the Ray executor forwards it), without packaging.

Built-in stages follow one naming rule, so a reader finds a stage from its name in one step:
``<platform>.<verb>`` is ``blift.collect.<platform>.<verb>``, any other ``<name>`` is
``blift.stages.<name>`` (a module, or a package whose ``stage.py`` holds the class).
"""

from __future__ import annotations

import difflib
import functools
import importlib
import os
from importlib.metadata import entry_points

from blift.errors import ConfigError
from blift.stage import Stage

GROUP = "blift.stages"


@functools.cache
def installed_stages() -> dict[str, str]:
    """``name -> "module:Class"`` of every installed distribution's ``blift.stages`` entry points.
    Two distributions claiming one name with different targets is an error naming both."""
    found: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        if ep.name in found and found[ep.name] != ep.value:
            raise ConfigError(f"stage {ep.name!r} is registered twice, as {found[ep.name]} and as {ep.value} "
                              f"(entry point group {GROUP!r}); uninstall one of the packages")
        found[ep.name] = ep.value
    return found


def _extra_stages() -> dict[str, str]:
    """Plugin stages from ``BLIFT_STAGES="name=module:Class;..."`` (inherited by worker processes)."""
    extra = {}
    for item in filter(None, (s.strip() for s in os.environ.get("BLIFT_STAGES", "").split(";"))):
        name, sep, target = item.partition("=")
        if not sep or ":" not in target:
            raise ConfigError(f"BLIFT_STAGES: entry {item!r}: expected name=module:Class")
        extra[name.strip()] = target.strip()
    return extra


def known_stages() -> dict[str, str]:
    """Every stage name this process can run: installed entry points, then ``BLIFT_STAGES``."""
    return {**installed_stages(), **_extra_stages()}


def load_stage(name: str) -> type[Stage]:
    stages = known_stages()
    try:
        target = stages[name]
    except KeyError:
        close = difflib.get_close_matches(name, stages, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(stages)) or f"none: is blift installed (pip install -e .)? no {GROUP!r} entry points"
        raise ConfigError(f"unknown stage {name!r}{hint} (known: {known})") from None
    module, _, attr = target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    if not (isinstance(cls, type) and issubclass(cls, Stage)) or cls.name != name:
        raise ConfigError(f"stage {name!r}: {target} is not a blift Stage registered under that name "
                          f"(its name is {getattr(cls, 'name', None)!r})")
    return cls
