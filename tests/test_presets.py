"""Paper presets fill the settings left None, by the backbone's preset name; explicit settings win."""

from __future__ import annotations

import pytest

from editlab.methods.base import EditMethod, UnsupportedBackbone
from editlab.methods.presets import Preset, apply_preset
from editlab.models.backbone import Backbone
from editlab.types import Condition, EditOutput, LearningStrategy, Taxonomy


class _Method(EditMethod):
    name = "m"
    taxonomy = Taxonomy(LearningStrategy.TRAINING_FREE, (Condition.PROMPT_PAIR,))
    presets = {"sd": Preset("paper, Sec. 4", {"guidance_scale": 7.5, "steps": 50})}

    def __init__(self, guidance_scale: float | None = None, steps: int | None = None) -> None:
        super().__init__(guidance_scale=guidance_scale, steps=steps)
        self.guidance_scale, self.steps = guidance_scale, steps

    def edit(self, sample, generator) -> EditOutput:  # pragma: no cover - not called
        raise NotImplementedError


def _backbone(preset: str | None, family: str = "sd") -> Backbone:
    return Backbone(name="b", source="b", vae=None, text_encoder=None, tokenizer=None, unet=None, scheduler=None,
                    preset=preset, family=family)


def test_preset_fills_only_unset_settings() -> None:
    m = _Method(steps=20)
    m.setup(_backbone("sd"))
    assert (m.guidance_scale, m.steps) == (7.5, 20)
    assert m.preset_record == {"preset": "sd", "source": "paper, Sec. 4", "applied": {"guidance_scale": 7.5},
                               "kept": ["steps"]}
    assert m.describe()["preset"]["applied"] == {"guidance_scale": 7.5}


def test_no_preset_for_small_backbones() -> None:
    m = _Method()
    m.setup(_backbone(None))
    assert (m.guidance_scale, m.steps) == (None, None)
    assert m.preset_record == {"preset": None}


def test_unknown_setting_in_a_preset_raises() -> None:
    with pytest.raises(AttributeError, match="unknown setting 'nope'"):
        apply_preset(_Method(), {"sd": Preset("x", {"nope": 1})}, "sd")


def test_family_mismatch_is_refused_with_the_working_families() -> None:
    with pytest.raises(UnsupportedBackbone, match="family 'flux'; families that work: sd"):
        _Method().setup(_backbone("sd", family="flux"))
