"""Metrics against their reference implementations on the same inputs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure
from torchmetrics.multimodal import CLIPScore
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

from editlab.metrics.base import EditBatch, MetricUnavailable, mask_to_unit, pil_to_unit
from editlab.metrics.clip_score import CLIPScoreMetric
from editlab.metrics.lpips_metric import LPIPSMetric, backbone_weights_file
from editlab.metrics.masked import BackgroundMSE, BackgroundPSNR, BackgroundSSIM
from editlab.models.tokenizer import build_clip_tokenizer


def _batch(mask: torch.Tensor | None, seed: int = 0) -> EditBatch:
    g = torch.Generator().manual_seed(seed)
    source = torch.rand(3, 3, 32, 32, generator=g)
    edited = (source + 0.1 * torch.randn(3, 3, 32, 32, generator=g)).clamp(0, 1)
    return EditBatch(edited=edited, source=source, source_prompts=["a"] * 3, target_prompts=["b"] * 3, mask=mask)


def _mask() -> torch.Tensor:
    m = torch.zeros(3, 1, 32, 32)
    m[0, :, 4:20, 4:20] = 1
    m[1, :, :, :16] = 1
    m[2] = 1  # all edit region: background metrics undefined
    return m


def test_background_mse_and_psnr_match_reference_on_unmasked_pixels() -> None:
    batch = _batch(_mask())
    mse = BackgroundMSE().per_sample(batch)
    psnr = BackgroundPSNR().per_sample(batch)
    for i in range(2):
        keep = (batch.mask[i, 0] == 0)
        e, s = batch.edited[i][:, keep], batch.source[i][:, keep]
        ref_mse = ((e - s) ** 2).mean()
        ref_psnr = peak_signal_noise_ratio(e, s, data_range=1.0)
        assert math.isclose(mse[i].item(), ref_mse.item(), rel_tol=1e-5)
        assert math.isclose(psnr[i].item(), ref_psnr.item(), rel_tol=1e-5)
    assert math.isnan(mse[2].item()) and math.isnan(psnr[2].item())


def test_background_ssim_equals_torchmetrics_when_nothing_is_masked() -> None:
    batch = _batch(torch.zeros(3, 1, 32, 32))
    ours = BackgroundSSIM().per_sample(batch)
    ref = structural_similarity_index_measure(batch.edited, batch.source, data_range=1.0, reduction="none")
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)


def test_background_ssim_ignores_the_edit_region() -> None:
    batch = _batch(_mask())
    before = BackgroundSSIM().per_sample(batch)
    batch.edited[0, :, 4:20, 4:20] = torch.rand(3, 16, 16)  # change only inside sample 0's mask...
    after = BackgroundSSIM().per_sample(batch)
    # ...SSIM windows straddling the border see the change, so allow a small shift, nothing more
    assert abs(after[0].item() - before[0].item()) < 0.05
    assert math.isnan(after[2].item())


def test_no_mask_gives_nan_and_metric_mean_skips_nan() -> None:
    m = BackgroundPSNR()
    m.update(_batch(None))
    assert torch.isnan(m.compute())
    m.update(_batch(_mask()))
    vals = torch.cat(m.values)
    assert torch.isclose(m.compute(), vals[~vals.isnan()].mean())


def test_image_conversions_do_not_wrap() -> None:
    arr = np.array([[[0, 128, 255]]], dtype=np.uint8).repeat(2, 0).repeat(2, 1)
    t = pil_to_unit(Image.fromarray(arr))
    assert t.dtype == torch.float32 and t.shape == (3, 2, 2)
    assert torch.allclose(t[:, 0, 0], torch.tensor([0.0, 128 / 255, 1.0]))
    rgba = Image.fromarray(np.dstack([arr, np.zeros((2, 2), np.uint8)]), "RGBA")  # fully transparent
    assert torch.all(pil_to_unit(rgba) == 1.0)  # composited on white
    gray = Image.fromarray(np.full((2, 2), 200, np.uint8), "L")
    assert torch.allclose(pil_to_unit(gray), torch.full((3, 2, 2), 200 / 255))
    mask = mask_to_unit(Image.fromarray(np.array([[0, 1], [255, 0]], np.uint8)))
    assert mask.tolist() == [[[0.0, 1.0], [1.0, 0.0]]]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("clip")
    tok = build_clip_tokenizer("a an red green blue circle square photo of".split(), path)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                     "num_attention_heads": 4, "max_position_embeddings": 77,
                     "eos_token_id": tok.convert_tokens_to_ids("<|endoftext|>")},
        vision_config={"image_size": 32, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
                       "num_hidden_layers": 2, "num_attention_heads": 4},
        projection_dim=16,
    )
    CLIPModel(config).save_pretrained(path)
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32},
                                                                 crop_size={"height": 32, "width": 32}),
                              tokenizer=tok)
    processor.save_pretrained(path)
    return path


class _TensorFeatures(torch.nn.Module):
    """transformers 5 returns model outputs from get_*_features; torchmetrics 1.9 expects tensors."""

    def __init__(self, model: CLIPModel) -> None:
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, *args, **kwargs) -> torch.Tensor:
        return self.model.get_image_features(*args, **kwargs).pooler_output

    def get_text_features(self, *args, **kwargs) -> torch.Tensor:
        return self.model.get_text_features(*args, **kwargs).pooler_output


def test_clip_score_matches_torchmetrics(tiny_clip: Path) -> None:
    ours = CLIPScoreMetric(model=str(tiny_clip))
    g = torch.Generator().manual_seed(1)
    edited = torch.rand(4, 3, 32, 32, generator=g)
    prompts = ["a red circle", "a blue square", "a photo of a green circle", "a red square"]
    batch = EditBatch(edited=edited, source=edited, source_prompts=prompts, target_prompts=prompts)
    values = ours.per_sample(batch)
    ref = CLIPScore(model_name_or_path=lambda: (_TensorFeatures(CLIPModel.from_pretrained(tiny_clip)),
                                                CLIPProcessor.from_pretrained(tiny_clip)))
    uint8 = (edited * 255).round().to(torch.uint8)
    for i in range(4):
        ref.reset()
        ref.update(uint8[i], prompts[i])
        assert math.isclose(values[i].item(), ref.compute().item(), rel_tol=1e-4, abs_tol=1e-4)
    assert ours.describe()["backbone"] == str(tiny_clip)


def test_clip_score_unavailable_model_is_a_clear_skip(tmp_path: Path) -> None:
    with pytest.raises(MetricUnavailable, match="could not be loaded"):
        CLIPScoreMetric(model=str(tmp_path / "missing"))


def test_lpips_missing_backbone_is_skipped_or_named_random() -> None:
    if backbone_weights_file("alex").exists():
        pytest.skip("ImageNet AlexNet weights are present here")
    with pytest.raises(MetricUnavailable, match="allow_random_backbone"):
        LPIPSMetric(net="alex")
    metric = LPIPSMetric(net="alex", allow_random_backbone=True)
    assert metric.name == "lpips_alex_randbackbone" and "RANDOM" in metric.definition
    batch = _batch(None)
    same = EditBatch(edited=batch.source, source=batch.source, source_prompts=[], target_prompts=[])
    assert torch.allclose(metric.per_sample(same), torch.zeros(3), atol=1e-6)
    assert (metric.per_sample(batch) > 0).all()
