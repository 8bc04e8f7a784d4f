"""Paper presets: the settings a method's paper or official code used on a backbone family.

A method (and an inversion or editor) lists its presets in a class attribute ``presets``, keyed by the
backbone's preset name (:attr:`editlab.models.backbone.Backbone.preset`, ``sd`` for Stable Diffusion's own
weights). Each :class:`Preset` names its source (repository and file, or paper section). When the method is
set up on a backbone, every setting that is ``None`` (the configs' "null = automatic") takes the preset's
value for that backbone; a setting given explicitly (in the config or on the command line) always wins, and a
backbone without a preset (ShapesWorld, toy) keeps the method's own fallbacks (usually the backbone's
recommended guidance scale and step count). What was applied is recorded with the run
(:func:`apply_preset` returns it; the runner stores it in ``method.json`` / ``results.json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """Settings of one published configuration, and where they were read."""

    source: str
    settings: Mapping[str, Any] = field(default_factory=dict)


def apply_preset(obj: Any, presets: Mapping[str, Preset], preset_name: str | None) -> dict[str, Any]:
    """Fill ``obj``'s ``None``-valued attributes from ``presets[preset_name]``; return what was applied.

    The returned record is ``{"preset": name, "source": ..., "applied": {key: value}, "kept": [keys set
    explicitly]}``, or ``{"preset": None}`` when the backbone has no preset or the object has none for it.
    Unknown setting names in a preset are a programming error and raise.
    """
    preset = presets.get(preset_name) if preset_name else None
    if preset is None:
        return {"preset": None}
    applied, kept = {}, []
    for key, value in preset.settings.items():
        if not hasattr(obj, key):
            raise AttributeError(f"preset '{preset_name}' of {type(obj).__name__} sets unknown setting '{key}'")
        if getattr(obj, key) is None:
            setattr(obj, key, value)
            applied[key] = value
        else:
            kept.append(key)
    return {"preset": preset_name, "source": preset.source, "applied": applied, "kept": kept}


def describe_presets(presets: Mapping[str, Preset]) -> list[str]:
    """One line per preset for ``editlab list``: name, source and settings."""
    lines = []
    for name, preset in presets.items():
        settings = ", ".join(f"{k}={v}" for k, v in preset.settings.items())
        lines.append(f"preset {name}: {settings}  [{preset.source}]")
    return lines
