"""Imported outputs: score edits another program made (FLUX.1 Kontext, Qwen-Image-Edit, GPT-Image, BAGEL, a lab's
unpublished method), each in its own environment.

The method edits nothing: for each sample it reads the image stored for it in a folder and hands it to the runner,
which records it like any edit, so editlab's metrics, tables, paired tests and gallery apply unchanged. The
imported method's survey taxonomy is declared in the config (``method.taxonomy``), its table row name is
``method.label``. Runtime and memory were not measured here: records carry ``"runtime": "unknown (imported)"``
with ``wall_time_s`` / ``peak_mem_mb`` set to None. A sample without a stored image is a recorded error naming the
file expected; an unreadable image is a recorded error; an image whose size differs from the source is resized to
it (GEdit-Bench's scorer does the same) and the record's warnings say so.

Layouts (``layout=auto``: an editlab run folder or GEdit's ``fullset/`` are told from the folder; otherwise each
sample is looked for in its benchmark's layout, then in ``flat``):

============  =================================================================================================
``editlab``   an editlab run folder (``records/<id>.json`` + ``images/``): another run's edits, re-scored here
``flat``      ``<root>/<sample id>.png`` (or .jpg/.jpeg/.webp)
``gedit``     GEdit-Bench: ``<root>/fullset/<task_type>/<en|cn>/<key>.png`` (``root`` is the method's folder;
              Step1X-Edit ``GEdit-Bench/EVAL.md``, ``test_gedit_score.py``)
``imgedit``   ImgEdit-Bench: ``<root>/<key>.png`` (``Benchmark/Basic/basic_bench.py``, ``UGE/UGE_bench.py``)
``pie``       PIE-Bench (PnPInversion ``run_editing_*.py``): ``<root>/annotation_images/<image_path>``, a
              ``[source | ... | edit]`` concatenation: when not square, the bottom-right ``pie_size`` square is the
              edit, as PnPInversion's ``evaluation/evaluate.py`` crops it
``kris``      KRIS-Bench: ``<root>/<category>/<id>.jpg`` (``metrics_common.py``)
``rise``      RISEBench: ``<root>/images/<category>/<index>.png|jpg|jpeg`` (``gpt_eval.py``)
============  =================================================================================================
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from editlab.files import safe_name
from editlab.methods.base import EditMethod
from editlab.types import Condition, EditOutput, LearningStrategy, Sample, SampleError, TaskType, Taxonomy

LAYOUTS = ("auto", "editlab", "flat", "gedit", "imgedit", "pie", "kris", "rise")
SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".PNG", ".JPG", ".JPEG")
#: benchmark key in ``Sample.meta`` -> the layout its public scripts write
_META_LAYOUT = {"gedit": "gedit", "imgedit": "imgedit", "pie": "pie", "kris": "kris", "rise": "rise"}
#: short spellings of the survey's learning strategies accepted in configs
_STRATEGY_ALIASES = {"training-free": LearningStrategy.TRAINING_FREE,
                     "fine-tuning": LearningStrategy.TESTING_TIME_FINETUNING,
                     "testing-time-finetuning": LearningStrategy.TESTING_TIME_FINETUNING}


def taxonomy_from_settings(settings: dict[str, Any] | None) -> Taxonomy:
    """The imported method's :class:`Taxonomy` from ``method.taxonomy`` (learning_strategy, conditions, tasks,
    paper); a value outside the survey's fails with the valid ones."""
    settings = dict(settings or {})
    raw = str(settings.get("learning_strategy") or LearningStrategy.TRAINING_BASED.value)
    try:
        strategy = _STRATEGY_ALIASES.get(raw) or LearningStrategy(raw)
    except ValueError:
        valid = ", ".join([s.value for s in LearningStrategy] + list(_STRATEGY_ALIASES))
        raise ValueError(f"unknown learning_strategy '{raw}', available: {valid}") from None

    def parse(kind: type, values: Any, what: str) -> tuple[Any, ...]:
        try:
            return tuple(kind(v) for v in (values or ()))
        except ValueError as err:
            raise ValueError(f"{err}; valid {what}: {', '.join(c.value for c in kind)}") from None

    conditions = parse(Condition, settings.get("conditions"), "conditions")
    tasks = parse(TaskType, settings.get("tasks"), "tasks") or tuple(TaskType)
    return Taxonomy(strategy, conditions, tasks, str(settings.get("paper") or ""))


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise SampleError(f"imported output is not a readable image: {path} ({type(err).__name__}: {err})") from err
    return image


def _find(stem: Path) -> Path | None:
    """``stem`` with any common image suffix (or ``stem`` itself when it has one and exists)."""
    if stem.suffix in SUFFIXES and stem.is_file():
        return stem
    return next((stem.with_name(stem.name + s) for s in SUFFIXES if stem.with_name(stem.name + s).is_file()), None)


class ImportedOutputs(EditMethod):
    """Reads each sample's image from ``root`` in one of :data:`LAYOUTS` (see the module docstring)."""

    name = "outputs"
    taxonomy = Taxonomy(
        LearningStrategy.TRAINING_BASED, (Condition.INSTRUCTION,),
        paper="outputs made elsewhere, read from a folder; the imported method's taxonomy is set by method.taxonomy")
    families = ()
    needs_backbone = False
    multi_image = True
    measured = False

    def __init__(self, root: str | None = None, label: str = "outputs", layout: str = "auto", pie_size: int = 512,
                 taxonomy: dict[str, Any] | None = None, **settings: Any) -> None:
        super().__init__(root=root, label=label, layout=layout, pie_size=pie_size, **settings)
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout '{layout}', available: {', '.join(LAYOUTS)}")
        self.root = None if root is None else Path(root)
        self.label = label
        self.layout = layout
        self.pie_size = int(pie_size)
        self.taxonomy = taxonomy_from_settings(taxonomy)  # the instance's: what the imported method is
        self.run_dir: Path | None = None

    # ---------------------------------------------------------------------------------------------- set-up
    def setup(self, backbone: Any = None, cache_dir: Path | None = None) -> None:
        """Check the folder and resolve what the layout can be told from it alone (no backbone is used)."""
        self.cache_dir = cache_dir
        if self.root is None:
            raise ValueError("method 'outputs' needs method.root=DIR, the folder holding the imported images")
        if not self.root.is_dir():
            raise FileNotFoundError(f"imported outputs folder not found: {self.root}")
        if self.layout in ("auto", "editlab"):
            self.run_dir = self._find_run_dir()
            if self.run_dir is not None:
                self.layout = "editlab"
            elif self.layout == "editlab":
                raise FileNotFoundError(f"{self.root} is not an editlab run folder (no records/ beside a "
                                        f"results.json or ids.json, here or in exactly one sub-folder)")
        if self.layout == "auto" and not (self.root / "fullset").is_dir():
            nested = [p.parent for p in self.root.glob("*/fullset") if p.is_dir()]
            if len(nested) == 1:  # GEdit's results/<method>/fullset given as results/
                self.root = nested[0]
        if self.layout == "auto" and (self.root / "fullset").is_dir():
            self.layout = "gedit"

    def _find_run_dir(self) -> Path | None:
        def is_run(p: Path) -> bool:
            return (p / "records").is_dir() and ((p / "results.json").is_file() or (p / "ids.json").is_file())

        if is_run(self.root):
            return self.root
        found = [p.parent for p in self.root.rglob("records") if is_run(p.parent)]
        return found[0] if len(found) == 1 else None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "root": str(self.root), "layout": self.layout,
                "taxonomy": self.taxonomy.as_dict(), "runtime": "unknown (imported)", "preset": self.preset_record}

    def missing_conditions(self, sample: Sample) -> list[Condition]:
        """None: the declared conditions describe the imported method; whether an output exists is what counts."""
        return []

    # ---------------------------------------------------------------------------------------------- reading
    def _layouts_for(self, sample: Sample) -> list[str]:
        """The layouts to look in: the configured one, or (``auto``) the sample's benchmark's, then ``flat``."""
        if self.layout != "auto":
            return [self.layout]
        own = [layout for key, layout in _META_LAYOUT.items() if key in sample.meta]
        return own[:1] + ["flat"]

    def _path(self, sample: Sample, layout: str) -> tuple[Path | None, str]:
        """(the stored image of ``sample``, or None; what was looked for)."""
        root = self.root
        meta: dict[str, Any] = {}
        if layout in _META_LAYOUT.values():
            meta = dict(sample.meta.get(layout) or {})
            if not meta and layout != "imgedit":
                raise SampleError(f"layout '{layout}' needs a {layout} sample (its meta['{layout}']); sample "
                                  f"'{sample.id}' comes from another dataset; set method.layout")
        if layout == "editlab":
            return self._from_run(sample.id)
        if layout == "flat":
            stem = root / sample.id
            return _find(stem) or _find(root / safe_name(sample.id)), f"{stem}.png (or .jpg/.jpeg/.webp)"
        if layout == "imgedit":
            stem = root / str(meta.get("key", sample.id))
            return _find(stem), f"{stem}.png"
        if layout == "gedit":
            stem = root / "fullset" / str(meta["task_type"]) / str(meta["language"]) / str(meta["key"])
            return _find(stem), f"{stem}.png"
        if layout == "kris":
            stem = root / str(meta["category"]) / str(meta["id"])
            return _find(stem), f"{stem}.jpg"
        if layout == "rise":
            stem = root / "images" / str(meta["category"]) / str(meta["index"])
            return _find(stem), f"{stem}.png (or .jpg/.jpeg)"
        # pie: the output mirrors annotation_images/<image_path>
        rel = Path(str(meta["image_path"]))
        candidates = [root / "annotation_images" / rel, root / rel]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            found = next((p for c in candidates if (p := _find(c.with_suffix(""))) is not None), None)
        return found, str(candidates[0])

    def _from_run(self, sample_id: str) -> tuple[Path | None, str]:
        assert self.run_dir is not None
        record_path = self.run_dir / "records" / f"{safe_name(sample_id)}.json"
        try:
            rec = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None, f"{record_path} (the imported run's record of this sample)"
        if rec.get("status") != "ok" or not rec.get("image"):
            raise SampleError(f"the imported run has no edit for '{sample_id}': {rec.get('status')}: "
                              f"{rec.get('error')} ({record_path})")
        path = self.run_dir / str(rec["image"])
        return (path if path.is_file() else None), str(path)

    def edit(self, sample: Sample, generator: torch.Generator) -> EditOutput:
        # 1. Find the stored image of this sample in the layout (auto: its benchmark's, else flat)
        looked: list[str] = []
        path = None
        for layout in self._layouts_for(sample):
            path, expected = self._path(sample, layout)
            looked.append(f"{expected} (layout {layout})")
            if path is not None:
                break
        if path is None:
            raise SampleError(f"no imported output for sample '{sample.id}': {' or '.join(looked)} not found")
        # 2. Decode it; a PIE-Bench concatenation keeps only its edit panel
        image = _open(path)
        warnings = []
        if layout == "pie" and image.width != image.height:
            side, (w, h) = self.pie_size, image.size
            if w < side or h < side:
                raise SampleError(f"PIE-Bench output {path} is {w}x{h}: too small for its {side}x{side} edit panel "
                                  f"(method.pie_size)")
            image = image.crop((w - side, h - side, w, h))
            warnings.append(f"bottom-right {side}x{side} panel of a {w}x{h} concatenation used as the edit")
        image = image.convert("RGB")
        # 3. Bring it to the source's size, noted in the record
        size = sample.source_image.size
        if image.size != size:
            warnings.append(f"imported image {image.width}x{image.height} resized to {size[0]}x{size[1]} (bicubic)")
            image = image.resize(size, Image.BICUBIC)
        rel = path.relative_to(self.root) if path.is_relative_to(self.root) else path
        return EditOutput(image=image, info={"layout": layout, "file": str(rel), "warnings": warnings})
