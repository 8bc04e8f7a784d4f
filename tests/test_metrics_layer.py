"""The metric layer against references: transformers CLIP, PIE-Bench's formulas, FID's closed form, torchmetrics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.image.kid import KernelInceptionDistance
from torchmetrics.regression import MeanSquaredError
from transformers import CLIPModel, CLIPProcessor, ViTConfig, ViTModel

from editlab.metrics.base import EditBatch
from editlab.metrics.clip_score import CLIPDirectional, CLIPEditedRegion, CLIPImageSimilarity, CLIPScoreMetric
from editlab.metrics.distribution import CLIPFeatures, DistributionMetric
from editlab.metrics.fidelity import TargetPSNR, TargetSSIM
from editlab.metrics.lpips_metric import LPIPSMetric, backbone_weights_file
from editlab.metrics.pie import PIEMSE, PIEPSNR, PIESSIM, pie_mask
from editlab.metrics.structure import StructureDistance

pytest_plugins = ["test_metrics"]  # reuse the tiny_clip fixture


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _batch(n: int = 4, mask: bool = True, target: bool = True) -> EditBatch:
    src = _images(n, seed=1)
    edited = (src + 0.2 * _images(n, seed=2) - 0.1).clamp(0, 1)
    m = torch.zeros(n, 1, 32, 32)
    m[:, :, 8:24, 8:24] = 1
    return EditBatch(edited=edited, source=src, source_prompts=["a red circle"] * n,
                     target_prompts=["a blue circle", "a green square", "a red square", "a photo of a circle"][:n],
                     mask=m if mask else None, target=_images(n, seed=3) if target else None)


def _hf_embeds(path: Path, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference embeddings from CLIPModel.forward (a different code path from get_*_features)."""
    model, proc = CLIPModel.from_pretrained(path).eval(), CLIPProcessor.from_pretrained(path)
    uint8 = (images * 255).round().to(torch.uint8)
    inputs = proc(text=prompts, images=list(uint8), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**inputs)
    return F.normalize(out.image_embeds, dim=-1), F.normalize(out.text_embeds, dim=-1)


def test_clip_directional_and_image_similarity_match_reference(tiny_clip: Path) -> None:
    batch = _batch()
    e_img, e_tgt = _hf_embeds(tiny_clip, batch.edited, batch.target_prompts)
    s_img, e_src = _hf_embeds(tiny_clip, batch.source, batch.source_prompts)
    ref_dir = F.cosine_similarity(e_img - s_img, e_tgt - e_src, dim=-1)
    torch.testing.assert_close(CLIPDirectional(model=str(tiny_clip)).per_sample(batch), ref_dir, rtol=1e-4, atol=1e-5)
    ref_i = (e_img * s_img).sum(-1)
    torch.testing.assert_close(CLIPImageSimilarity(model=str(tiny_clip)).per_sample(batch), ref_i, rtol=1e-4,
                               atol=1e-5)
    t_img, _ = _hf_embeds(tiny_clip, batch.target, batch.target_prompts)
    gt = CLIPImageSimilarity(model=str(tiny_clip), reference="target")
    assert gt.name == f"gt_clip_i[{tiny_clip.name}]"
    torch.testing.assert_close(gt.per_sample(batch), (e_img * t_img).sum(-1), rtol=1e-4, atol=1e-5)


def test_clip_edited_region_is_clip_score_of_masked_edit(tiny_clip: Path) -> None:
    batch = _batch()
    masked = EditBatch(edited=batch.edited * batch.mask, source=batch.source, source_prompts=batch.source_prompts,
                       target_prompts=batch.target_prompts)
    torch.testing.assert_close(CLIPEditedRegion(model=str(tiny_clip)).per_sample(batch),
                               CLIPScoreMetric(model=str(tiny_clip)).per_sample(masked))
    batch.mask[1] = 0
    assert math.isnan(CLIPEditedRegion(model=str(tiny_clip)).per_sample(batch)[1].item())
    # PIE-Bench prompts mark edited words with brackets; they are stripped before CLIP sees the text
    bracketed = EditBatch(edited=batch.edited, source=batch.source, source_prompts=batch.source_prompts,
                          target_prompts=["a [blue] circle", "a green [square]", "a red square", "a photo of a circle"])
    clip = CLIPScoreMetric(model=str(tiny_clip))
    torch.testing.assert_close(clip.per_sample(bracketed), clip.per_sample(batch))


@pytest.fixture(scope="module")
def tiny_vit(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("vit")
    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64), add_pooling_layer=False).save_pretrained(path)
    return path


def _pie_structure_reference(model: ViTModel, a: torch.Tensor, b: torch.Tensor, pie: bool) -> float:
    """PIE-Bench's calculate_global_ssim_loss transcribed: keys of the last block, cosine self-similarity
    (attn_cosine_sim with eps 1e-8), MSE."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def sim(x: torch.Tensor) -> torch.Tensor:
        x = x * 255 if pie else x
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False, antialias=True)
        x = (x - mean) / std
        keys = []
        h = model.layers[-1].attention.k_proj.register_forward_hook(lambda m, i, o: keys.append(o))
        with torch.no_grad():
            model(pixel_values=x)
        h.remove()
        k = keys[0][0]
        norm = k.norm(dim=1, keepdim=True)
        return (k @ k.T) / torch.clamp(norm @ norm.T, min=1e-8)

    return F.mse_loss(sim(a), sim(b)).item()


@pytest.mark.parametrize("mode", ["clean", "pie"])
def test_structure_distance_matches_pie_transcription(tiny_vit: Path, mode: str) -> None:
    metric = StructureDistance(backbone=str(tiny_vit), mode=mode)
    if mode == "clean":  # a ViT folder without processor: ImageNet statistics, as in PIE-Bench
        assert metric.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    batch = _batch(2)
    ours = metric.per_sample(batch)
    model = ViTModel.from_pretrained(tiny_vit).eval()
    for i in range(2):
        ref = _pie_structure_reference(model, batch.edited[i:i + 1], batch.source[i:i + 1], pie=mode == "pie")
        assert math.isclose(ours[i].item(), ref, rel_tol=1e-4, abs_tol=1e-9)
    same = EditBatch(edited=batch.source, source=batch.source, source_prompts=[], target_prompts=[])
    assert torch.allclose(metric.per_sample(same), torch.zeros(2))
    assert "vit" in metric.name or tiny_vit.name in metric.name


def _ssim_valid_reference(p: np.ndarray, g: np.ndarray) -> float:
    """SSIM as torchmetrics computed it before v1.5 (the version PIE-Bench's numbers were made with): Gaussian
    11x11 window, sigma 1.5, data range 1, averaged over the positions whose window lies inside the image
    (the map cropped by 5 px), i.e. a valid correlation of the image itself. (3, H, W) float64 arrays."""
    from scipy.signal import correlate2d

    x = np.arange(11) - 5.0
    g1 = np.exp(-(x**2) / (2 * 1.5**2))
    g1 /= g1.sum()
    window = np.outer(g1, g1)
    c1, c2 = 0.01**2, 0.03**2
    maps = []
    for a, b in zip(p, g):
        mu_a, mu_b = correlate2d(a, window, "valid"), correlate2d(b, window, "valid")
        s_aa = correlate2d(a * a, window, "valid") - mu_a**2
        s_bb = correlate2d(b * b, window, "valid") - mu_b**2
        s_ab = correlate2d(a * b, window, "valid") - mu_a * mu_b
        maps.append((2 * mu_a * mu_b + c1) * (2 * s_ab + c2) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2)))
    return float(np.mean(maps))


def _pie_unedited_reference(edited: np.ndarray, source: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """PIE-Bench evaluate.py transcribed for one sample: mask_decode's border, images x (1 - mask) as HxWx3
    float arrays, torchmetrics class instances on (1, 3, H, W) tensors; SSIM as the torchmetrics of its time."""
    mask = mask.copy()
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 1
    keep = (1 - mask)[:, :, None].repeat(3, axis=2)
    if keep.sum() == 0:
        return {"psnr": float("nan"), "mse": float("nan"), "ssim": float("nan")}
    p = torch.tensor(edited * keep).permute(2, 0, 1).unsqueeze(0)
    g = torch.tensor(source * keep).permute(2, 0, 1).unsqueeze(0)
    return {
        "psnr": PeakSignalNoiseRatio(data_range=1.0)(p, g).item(),
        "mse": MeanSquaredError()(p[0].contiguous(), g[0].contiguous()).item(),
        "ssim": _ssim_valid_reference(p[0].double().numpy(), g[0].double().numpy()),
    }


def test_pie_ssim_is_the_cropped_map_whatever_torchmetrics_is_installed() -> None:
    batch = _batch(2)
    ours = PIESSIM()._score(batch.edited, batch.source)
    for i in range(2):
        ref = _ssim_valid_reference(batch.edited[i].double().numpy(), batch.source[i].double().numpy())
        assert math.isclose(ours[i].item(), ref, rel_tol=1e-4)
        # the installed torchmetrics (>= 1.5) averages the whole reflect-padded map: a different number
        full = StructuralSimilarityIndexMeasure(data_range=1.0)(batch.edited[i:i + 1], batch.source[i:i + 1]).item()
        assert not math.isclose(full, ref, rel_tol=1e-4)


def test_pie_unedited_metrics_match_transcription_with_border_and_nan() -> None:
    batch = _batch(3)
    batch.mask[1] = 0  # no annotated region: only the forced border is "edited"
    batch.mask[2] = 1  # everything edited: NaN, excluded from the mean
    got = {"psnr": PIEPSNR().per_sample(batch), "mse": PIEMSE().per_sample(batch), "ssim": PIESSIM().per_sample(batch)}
    for i in range(3):
        ref = _pie_unedited_reference(batch.edited[i].permute(1, 2, 0).numpy(),
                                      batch.source[i].permute(1, 2, 0).numpy(), batch.mask[i, 0].numpy())
        for k in ref:
            if math.isnan(ref[k]):
                assert math.isnan(got[k][i].item())
            else:
                assert math.isclose(got[k][i].item(), ref[k], rel_tol=1e-4), (k, i)
    assert pie_mask(batch.mask)[1, 0, 0].tolist() == [1.0] * 32
    m = PIEPSNR()
    m.update(batch)
    assert math.isclose(m.compute().item(), got["psnr"][:2].mean().item(), rel_tol=1e-6)
    assert PIEMSE.scale == 1e4 and PIESSIM.scale == 1e2


def test_fidelity_metrics_match_torchmetrics_and_nan_without_target() -> None:
    batch = _batch(3)
    for i in range(3):
        p, t = batch.edited[i:i + 1], batch.target[i:i + 1]
        assert math.isclose(TargetPSNR().per_sample(batch)[i].item(), PeakSignalNoiseRatio(data_range=1.0)(p, t).item(),
                            rel_tol=1e-5)
        assert math.isclose(TargetSSIM().per_sample(batch)[i].item(),
                            StructuralSimilarityIndexMeasure(data_range=1.0)(p, t).item(), rel_tol=1e-4)
    assert torch.isnan(TargetPSNR().per_sample(_batch(2, target=False))).all()


def _frechet(f1: np.ndarray, f2: np.ndarray) -> float:
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_fid_matches_closed_form_and_kid_matches_torchmetrics(tiny_clip: Path) -> None:
    real, fake = _images(24, seed=5), (_images(24, seed=6) * 0.5 + 0.25)
    fid = DistributionMetric(kind="fid", feature=str(tiny_clip), reference="target")
    kid = DistributionMetric(kind="kid", feature=str(tiny_clip), reference="target", kid_subset_size=10)
    for start in (0, 12):  # two batches: the streaming sums must add up
        b = EditBatch(edited=fake[start:start + 12], source=fake[start:start + 12], source_prompts=[],
                      target_prompts=[], target=real[start:start + 12])
        fid.update(b)
        kid.update(b)
    feats = CLIPFeatures(str(tiny_clip))
    ref = _frechet(feats(real).double().numpy(), feats(fake).double().numpy())
    out = fid.compute()
    assert out["n"] == 24 and math.isclose(out["value"], ref, rel_tol=1e-3, abs_tol=1e-6)
    torch.manual_seed(0)
    ref_kid = KernelInceptionDistance(feature=feats, normalize=True, subset_size=10)
    ref_kid.update(real, real=True)
    ref_kid.update(fake, real=False)
    torch.manual_seed(0)
    ours_kid = kid.compute()
    torch.manual_seed(0)
    mean, std = ref_kid.compute()
    assert fid.name == "fid[clip]" or fid.name.startswith("fid[")
    assert math.isfinite(ours_kid["value"]) and math.isfinite(std.item())
    assert math.isclose(ours_kid["value"], mean.item(), rel_tol=1e-3, abs_tol=1e-6)


def test_background_lpips_averages_the_lpips_map_outside_the_mask() -> None:
    import lpips

    if backbone_weights_file("alex").exists():
        pytest.skip("ImageNet AlexNet weights present: random-backbone naming not exercised")
    metric = LPIPSMetric(net="alex", allow_random_backbone=True, region="background")
    assert metric.name == "bg_lpips_alex_randbackbone"
    batch = _batch(2)
    torch.manual_seed(0)
    ref_model = lpips.LPIPS(net="alex", pnet_rand=True, spatial=True, verbose=False).eval()
    with torch.no_grad():
        spatial = ref_model(batch.edited * 2 - 1, batch.source * 2 - 1)
    keep = batch.mask < 0.5
    ref = torch.stack([spatial[i][keep[i]].mean() for i in range(2)])
    torch.testing.assert_close(metric.per_sample(batch), ref, rtol=1e-5, atol=1e-7)
    assert torch.isnan(metric.per_sample(_batch(2, mask=False))).all()
