"""Building training settings from Kedro-style parameter dicts."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def config_from_params(cls: type[T], params: dict[str, Any], section: str) -> T:
    """``cls(**params)`` for a settings dataclass, naming any key that is not a setting.

    Parameters
    ----------
    cls
        A dataclass whose fields are the settings.
    params
        The parameter dict (e.g. ``params:mask_gan.training``).
    section
        Where the parameters live, for the error message (``mask_gan``, ``image_translation``).
    """
    check_known_settings(cls, params, section)
    return cls(**params)


def check_known_settings(cls: type, params: dict[str, Any], section: str) -> None:
    """Raise a ValueError naming every key of ``params`` that is not a field of the dataclass ``cls``
    (a typo must not pass silently)."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown {section} parameter(s) {unknown}; known: {sorted(known)}")
