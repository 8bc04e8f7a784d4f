"""A method's own defaults: what a setting left ``None`` becomes on a backbone without a paper preset.

At set-up a method first takes its paper preset for the backbone (:func:`editlab.methods.presets.apply_preset`),
then :func:`fill_unset` gives every setting still ``None`` the method's own default (often the backbone's
recommended guidance scale and step count, as small backbones keep their own scales). Both are recorded in
``method.json``: ``preset.applied`` and ``preset.defaults``, so a run states every value it used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def fill_unset(obj: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """Set each of ``obj``'s attributes named in ``values`` that is still ``None``; return what was set."""
    filled = {}
    for key, value in values.items():
        if not hasattr(obj, key):
            raise AttributeError(f"{type(obj).__name__} has no setting '{key}'")
        if getattr(obj, key) is None:
            setattr(obj, key, value)
            filled[key] = value
    return filled
