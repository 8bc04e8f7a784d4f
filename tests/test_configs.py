"""Every config file composes and instantiates (as lightning-hydra-template's tests do)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_cfg, write_folder_dataset
from test_datasets_benchmarks import FIXTURE_WRITERS

from editlab import ROOT
from editlab.bench.runner import build, build_metrics
from editlab.datasets.base import EditDataset
from editlab.methods.base import EditMethod
from editlab.models.backbone import Backbone, BackboneUnavailable, backbone_from_config
from editlab.registry import BACKBONES, DATASETS, METHODS, METRICS

CONFIGS = ROOT / "configs"


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("name", _names("method"))
def test_method_configs(name: str) -> None:
    cfg = compose_cfg([f"method={name}"])
    method = build(cfg.method)
    assert isinstance(method, EditMethod) and type(method).name == name and method.name == cfg.method.name
    assert name in METHODS


def test_registries_match_config_folders() -> None:
    assert METHODS.names() == _names("method")
    assert DATASETS.names() == _names("dataset")
    assert BACKBONES.names() == _names("backbone")
    metric_targets = {  # keys starting with "_" (`_input_`) say how edits are presented, they are no metric
        v["_target_"] for name in _names("metrics") for k, v in compose_cfg([f"metrics={name}"]).metrics.items()
        if not k.startswith("_")
    }
    assert {METRICS.path(n).replace(":", ".") for n in METRICS.names()} == metric_targets


@pytest.mark.parametrize("name", _names("dataset"))
def test_dataset_configs(name: str, tmp_path: Path) -> None:
    overrides = [f"dataset={name}", "dataset.limit=2"]
    if name == "folder":
        overrides.append(f"dataset.root={write_folder_dataset(tmp_path / 'd', broken=False)}")
    elif name in FIXTURE_WRITERS:
        overrides.append(f"dataset.root={FIXTURE_WRITERS[name](tmp_path / name)}")
    cfg = compose_cfg(overrides)
    dataset = build(cfg.dataset)
    assert isinstance(dataset, EditDataset) and len(dataset.ids()) == 2
    sample = dataset.load(dataset.ids()[0])
    assert sample.source_image.size[0] > 0


@pytest.mark.parametrize("name", _names("backbone"))
def test_backbone_configs(name: str, monkeypatch) -> None:
    cfg = compose_cfg([f"backbone={name}"])
    source = cfg.backbone.get("pretrained")
    if source and not (ROOT / source).exists() and not Path(source).exists():
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(BackboneUnavailable, match="backbone.pretrained=/path/to/model"):
            backbone_from_config(cfg.backbone, device="cpu")
        return
    backbone = backbone_from_config(cfg.backbone, device="cpu")
    assert isinstance(backbone, Backbone) and backbone.resolution > 0


@pytest.mark.parametrize("name", _names("metrics"))
def test_metric_configs_instantiate_or_skip_with_reason(name: str, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = compose_cfg([f"metrics={name}"]).metrics
    metrics, skipped = build_metrics(cfg)
    assert len(metrics) + len(skipped) == len([k for k in cfg if not str(k).startswith("_")])  # `_input_`: no metric
    assert all(reason for reason in skipped.values())
    if name == "default":
        assert {"bg_psnr", "bg_mse", "bg_ssim", "gt_psnr", "gt_ssim"} <= {m.name for m in metrics}


@pytest.mark.parametrize("name", _names("experiment"))
def test_experiment_configs(name: str) -> None:
    cfg = compose_cfg([f"experiment={name}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params or {}
    for method in str(params.get("method", cfg.method.name)).split(","):
        assert method in METHODS, method


@pytest.mark.parametrize("name", _names("debug"))
def test_debug_configs(name: str) -> None:
    cfg = compose_cfg([f"debug={name}"])
    assert cfg.dataset.limit is not None
