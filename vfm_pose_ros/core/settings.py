"""Typed settings from a plain config dict: a frozen dataclass is built once from the checkpoint's (or the
command line's) config, so each default is written in one place, its field, and the code reads typed
attributes instead of repeating ``config.get("key", default)``."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def config_key(f: dataclasses.Field, prefix: str) -> str:
    """The config key of a settings field: ``metadata["key"]`` when given, else ``prefix + name``."""
    return f.metadata.get("key", prefix + f.name)


def settings_from(cls: type[T], config: Mapping, prefix: str = "") -> T:
    """``cls`` (a dataclass whose fields all have defaults) from ``config``: each field reads its key (see
    :func:`config_key`) and is cast to its default's type; absent keys, and None for a field whose default is
    not None, keep the default. ValueError naming the key for a value that does not cast."""
    values = {}
    for f in dataclasses.fields(cls):
        key = config_key(f, prefix)
        value = config.get(key)
        if value is None:
            continue
        default = f.default
        try:
            values[f.name] = value if default is None else type(default)(value)
        except (TypeError, ValueError):
            raise ValueError(f"config {key!r} must be a {type(default).__name__}; got {value!r}") from None
    return cls(**values)


def config_items(settings, prefix: str = "") -> dict:
    """The settings as config keys and values (what :func:`settings_from` reads back)."""
    return {config_key(f, prefix): getattr(settings, f.name) for f in dataclasses.fields(settings)}
