"""Settings dataclasses from parameter dicts: the one place where a Kedro parameter block, or a settings
record read back from JSON, becomes a typed settings object."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Iterable
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def config_from_params(cls: type[T], params: dict[str, Any], section: str, *, strict: bool = True) -> T:
    """A settings dataclass ``cls`` from a parameter dict.

    Nested settings dataclasses are built from nested dicts, and lists become tuples where the setting
    is one (YAML and JSON have no tuples).

    Parameters
    ----------
    cls
        A dataclass whose fields are the settings.
    params
        The parameter dict (e.g. ``params:mask_gan.training``), or ``dataclasses.asdict`` output read back.
    section
        Where the parameters live, for the error message (``mask_gan.training``, ``evaluation.stardist``).
    strict
        Raise a ValueError naming any key that is not a setting (a typo must not pass silently); False
        ignores such keys (settings records written by older versions).
    """
    if strict:
        check_known_settings(cls, params, section)
    known = {field.name: field for field in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in params.items():
        if name not in known:
            continue
        default = known[name].default
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = config_from_params(type(default), value, f"{section}.{name}", strict=strict)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[name] = value
    return cls(**kwargs)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """Command-line overrides ``KEY=VALUE`` (the benchmarks' ``--set``) as a dict, each value read as YAML
    (``--set "patch_size=[64, 64]"`` gives a list)."""
    overrides = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals:
            raise ValueError(f"--set needs KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return overrides


def check_known_settings(cls: type, params: dict[str, Any], section: str) -> None:
    """Raise a ValueError naming every key of ``params`` that is not a field of the dataclass ``cls``
    (a typo must not pass silently)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown {section} parameter(s) {unknown}; known: {sorted(known)}")


def check_positive_int(value: Any, name: str) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is an integer >= 1 (a bool is not one)."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
