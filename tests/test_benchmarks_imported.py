"""GEdit-Bench, ImgEdit-Bench, KRIS-Bench, RISEBench and Emu Edit loaders on fixtures in their published formats;
index rows whose bytes are not UTF-8 in every loader; the ``outputs`` method on each layout; the new metrics against
independent references; and an end-to-end comparison of two imported folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_cfg, write_folder_dataset
from fixtures_benchmarks import (
    IMGEDIT_BASIC,
    emu_rows,
    gedit_rows,
    rgb,
    write_emu_edit,
    write_gedit,
    write_imgedit,
    write_kris,
    write_parquet,
    write_rise,
)
from PIL import Image
from test_datasets_benchmarks import write_imagenhub, write_magicbrush, write_pie_bench, write_tedbench

from editlab.bench.runner import edit_one
from editlab.datasets import prepare
from editlab.datasets.emu_edit import EmuEditDataset
from editlab.datasets.folder import DatasetFormatError, FolderDataset
from editlab.datasets.gedit import GEditBenchDataset
from editlab.datasets.imagenhub import ImagenHubTextDataset
from editlab.datasets.imgedit import ImgEditDataset
from editlab.datasets.kris import KRISBenchDataset
from editlab.datasets.magicbrush import ArrowFileTable
from editlab.datasets.pie_bench import PIEBenchDataset
from editlab.datasets.risebench import RISEBenchDataset
from editlab.datasets.tedbench import TEdBenchDataset
from editlab.methods.outputs import ImportedOutputs
from editlab.metrics.base import EditBatch
from editlab.types import LearningStrategy, SampleError, TaskType

pytest.importorskip("pyarrow")


# --------------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------------
def test_gedit_languages_subsets_and_fields(tmp_path: Path) -> None:
    root = write_gedit(tmp_path / "g")
    en = GEditBenchDataset(str(root))
    assert en.ids() == ["k001_en", "k002_en", "k003_en"]
    assert [t for _, t in en._index()] == [TaskType.COLOR_CHANGE, TaskType.OBJECT_REMOVAL, None]  # text_change: none
    sample = en.load("k001_en")
    assert sample.instruction == "en instruction k001" and sample.source_image.size == (48, 40)  # input_image
    assert sample.meta["gedit"] == {"key": "k001", "task_type": "color_alter", "language": "en", "intersection": True}
    assert GEditBenchDataset(str(root), source="input_image_raw").load("k001_en").source_image.size == (96, 80)
    assert len(GEditBenchDataset(str(root), language="cn")) == 3
    assert len(GEditBenchDataset(str(root), language="all")) == 6
    assert GEditBenchDataset(str(root), subset="intersection").ids() == ["k001_en", "k003_en"]


def test_gedit_arrow_files_and_malformed_rows(tmp_path: Path) -> None:
    import pyarrow as pa

    rows = gedit_rows()[:3]
    rows[1]["task_type"] = "subject-teleport"
    rows[2]["instruction"] = None
    rows.append(dict(gedit_rows()[0], key="k009", input_image={"bytes": b"not an image", "path": None}))
    table = pa.Table.from_pylist(rows)
    folder = tmp_path / "g" / "train"
    folder.mkdir(parents=True)
    with pa.OSFile(str(folder / "data-00000-of-00001.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    with pytest.raises(DatasetFormatError, match=r"00001.arrow, row 1: unknown task_type 'subject-teleport'"):
        GEditBenchDataset(str(tmp_path / "g"))
    ds = GEditBenchDataset(str(tmp_path / "g"), on_error="skip")
    assert isinstance(ds.table, ArrowFileTable) and len(ds) == 4
    assert ds.load("k001_en").instruction == "en instruction k001"
    with pytest.raises(SampleError, match="row 2: missing field"):
        ds.load("k003_en")
    with pytest.raises(SampleError, match="input_image.*not a readable image"):
        ds.load("k009_en")


def test_emu_edit_swapped_split_names(tmp_path: Path) -> None:
    root = write_emu_edit(tmp_path / "e")
    test = EmuEditDataset(str(root))  # editlab's test = the hub's validation files
    assert test.ids() == ["0", "1", "2"] and test.hub_split == "validation"
    assert EmuEditDataset(str(root), split="validation").ids() == ["100", "101", "102", "103"]
    assert EmuEditDataset(str(root), hub_split_names=True).ids() == ["100", "101", "102", "103"]
    sample = test.load("1")
    assert (sample.instruction, sample.source_prompt, sample.target_prompt) == ("edit 1", "a photo 1",
                                                                             "an edited photo 1")
    assert sample.task_type is TaskType.OBJECT_REMOVAL and test.load("2").task_type is None  # global: no survey type
    assert sample.meta["emu_edit"]["hub_split"] == "validation"
    rows = emu_rows(2)
    rows[1]["task"] = "teleport"
    write_parquet(tmp_path / "bad" / "data" / "validation-00000-of-00001.parquet", rows)
    with pytest.raises(DatasetFormatError, match=r"row 1: unknown task 'teleport'"):
        EmuEditDataset(str(tmp_path / "bad"))
    assert EmuEditDataset(str(tmp_path / "bad"), on_error="skip").load("0").instruction == "edit 0"


def test_imgedit_basic_and_uge(tmp_path: Path) -> None:
    root = write_imgedit(tmp_path / "i")
    basic = ImgEditDataset(str(root))
    assert basic.ids() == list(IMGEDIT_BASIC)
    assert dict(basic._index()) == {"1082": None, "673": TaskType.STYLE_CHANGE, "97": TaskType.OBJECT_ADDITION}
    sample = basic.load("673")
    assert sample.instruction == "Make it ukiyo-e." and sample.meta["imgedit"]["edit_type"] == "style"
    uge = ImgEditDataset(str(root), suite="uge")
    assert uge.ids() == ["1", "2"] and uge.name == "imgedit_uge" and uge.load("2").instruction == "Remove the person."
    index = root / "Basic" / "basic_edit.json"
    entries = json.loads(index.read_text())
    entries["97"]["edit_type"] = "teleport"
    entries["673"]["id"] = "style/missing.jpg"
    index.write_text(json.dumps(entries))
    with pytest.raises(DatasetFormatError, match=r"basic_edit.json, entry 1 \('673'\): image file not found"):
        ImgEditDataset(str(root))
    ds = ImgEditDataset(str(root), on_error="skip")
    assert ds.load("1082").instruction == "Change the shell texture."
    with pytest.raises(SampleError, match="entry 2 \\('97'\\): unknown edit_type 'teleport'"):
        ds.load("97")


def test_kris_multi_image_and_ground_truth(tmp_path: Path) -> None:
    root = write_kris(tmp_path / "k")
    ds = KRISBenchDataset(str(root))
    assert ds.ids() == ["color_change-1", "color_change-2", "viewpoint_change-1", "multi-element_composition-1"]
    assert len(ds.missing_categories) == 17
    multi = ds.load("multi-element_composition-1")
    assert multi.source_image.size == (39, 40) and [im.size for im in multi.reference_images] == [(40, 40), (41, 40)]
    assert multi.meta["kris"]["dimension"] == "Instruction Decomposition" and multi.target_image is None
    view = ds.load("viewpoint_change-1")
    assert view.task_type is TaskType.VIEWPOINT and view.target_image is not None and view.reference_images is None
    assert view.meta["kris"]["knowledge"] == "Factual" and view.meta["kris"]["explain"] == "the top view"
    assert KRISBenchDataset(str(root / "KRIS_Bench"), categories=["color_change"]).ids() == ["color_change-1",
                                                                                          "color_change-2"]
    ann = root / "KRIS_Bench" / "color_change" / "annotation.json"
    entries = json.loads(ann.read_text())
    del entries["2"]["ins_en"]
    ann.write_text(json.dumps(entries))
    with pytest.raises(DatasetFormatError, match=r"color_change/annotation.json, entry 1 \('2'\): missing field"):
        KRISBenchDataset(str(root))
    assert len(KRISBenchDataset(str(root), on_error="skip")) == 4


def test_kris_method_taking_one_image_is_not_applicable(tmp_path: Path) -> None:
    from editlab.methods.instruct_pix2pix import InstructPix2Pix

    ds = KRISBenchDataset(str(write_kris(tmp_path / "k")))
    rec, image, _ = edit_one(InstructPix2Pix(), ds, "multi-element_composition-1", 0, 64, torch.device("cpu"))
    assert rec["status"] == "not_applicable" and image is None
    assert rec["error"] == "sample has 3 input images; method 'instruct_pix2pix' takes one image"


def test_rise_splits_references_and_malformed(tmp_path: Path) -> None:
    root = write_rise(tmp_path / "r")
    ds = RISEBenchDataset(str(root))
    assert ds.ids() == ["temporal_reasoning_1", "logical_reasoning_1", "spatial_reasoning_1"]
    logic = ds.load("logical_reasoning_1")
    assert logic.target_image is not None and logic.meta["rise"]["subtask"] == "Puzzle Solving"
    assert ds.load("temporal_reasoning_1").meta["rise"]["reference"] == "A rotten banana."
    with pytest.raises(FileNotFoundError, match="data_total.json.*editlab data prepare rise"):
        RISEBenchDataset(str(root), split="mini")
    mini = write_rise(tmp_path / "m" / "data", name="data_total.json").parent
    assert len(RISEBenchDataset(str(mini), split="mini")) == 3
    entries = json.loads((root / "datav2_total_w_subtask.json").read_text())
    entries[2]["category"] = "magical_reasoning"
    (root / "datav2_total_w_subtask.json").write_text(json.dumps(entries))
    with pytest.raises(DatasetFormatError, match=r"entry 2: unknown category 'magical_reasoning'"):
        RISEBenchDataset(str(root))
    assert RISEBenchDataset(str(root), on_error="skip").load("logical_reasoning_1").instruction


# --------------------------------------------------------------------------------------------------------
# Index rows whose bytes are not UTF-8: one row's problem, in every loader
# --------------------------------------------------------------------------------------------------------
def _folder_jsonl(root: Path) -> Path:
    return write_folder_dataset(root, n_good=3, broken=False)


def _folder_csv(root: Path) -> Path:
    root = write_folder_dataset(root, n_good=3, broken=False)
    rows = [json.loads(line) for line in (root / "samples.jsonl").read_text().splitlines()]
    lines = ["id,image,source_prompt,target_prompt"] + [f"{r['id']},{r['image']},a red square,a blue square {i}"
                                                         for i, r in enumerate(rows)]
    (root / "samples.csv").write_text("\n".join(lines) + "\n")
    return root


#: loader name -> (fixture writer, loader, index file, bytes to corrupt, the sample id whose row holds them)
UTF8_CASES = {
    "folder_jsonl": (_folder_jsonl, lambda r, e: FolderDataset(str(r), on_error=e), "samples.jsonl",
                     b'"img1.png"', "good1"),
    "folder_csv": (_folder_csv, lambda r, e: FolderDataset(str(r), samples="samples.csv", on_error=e),
                   "samples.csv", b"a blue square 1", "good1"),
    "pie_bench": (write_pie_bench, lambda r, e: PIEBenchDataset(str(r), on_error=e), "mapping_file.json",
                  b"111000000000.jpg", "111000000000"),
    "tedbench": (write_tedbench, lambda r, e: TEdBenchDataset(str(r), on_error=e), "input_list.json",
                 b"A photo of a horse.", "002_zebra"),
    "magicbrush_hub_jsonl": (write_imagenhub, lambda r, e: ImagenHubTextDataset(str(r), on_error=e),
                             "filtered/metadata.jsonl", b"make it red 1", "sample_139306_2"),
    "magicbrush_sessions": (write_magicbrush, None, "test/edit_sessions.json", b"edit 200.1", "200_t1"),
    "imgedit": (write_imgedit, lambda r, e: ImgEditDataset(str(r), on_error=e), "Basic/basic_edit.json",
                b"Add a chandelier.", "97"),
    "kris": (write_kris, lambda r, e: KRISBenchDataset(str(r), on_error=e), "KRIS_Bench/color_change/annotation.json",
             b"Make the car red.", "color_change-2"),
    "rise": (write_rise, lambda r, e: RISEBenchDataset(str(r), on_error=e), "datav2_total_w_subtask.json",
             b"Assemble the parts.", "spatial_reasoning_1"),
}


@pytest.mark.parametrize("case", sorted(UTF8_CASES))
def test_row_with_invalid_utf8_is_one_samples_error(case: str, tmp_path: Path) -> None:
    from editlab.datasets.magicbrush import MagicBrushDataset

    writer, make, index, needle, bad_id = UTF8_CASES[case]
    make = make or (lambda r, e: MagicBrushDataset(str(r), on_error=e))
    root = writer(tmp_path / case)
    path = root / index
    data = path.read_bytes()
    assert data.count(needle) == 1
    offset = data.index(needle) + 3
    path.write_bytes(data.replace(needle, needle[:3] + b"\xe9\xff" + needle[5:]))
    with pytest.raises(DatasetFormatError) as err:  # on_error=raise: one line naming file, row and offset
        make(root, "raise")
    message = str(err.value)
    assert "\n" not in message and len(message) < 300 and str(path) in message
    assert f"byte offset {offset}" in message and ("row" in message or "entry" in message or "session" in message)
    ds = make(root, "skip")  # on_error=skip: that sample is a recorded error, every other row loads
    assert bad_id in ds.ids()
    with pytest.raises(SampleError, match=f"not valid UTF-8 at (line [0-9]+, )?byte offset {offset}"):
        ds.load(bad_id)
    for sid in ds.ids():
        if sid != bad_id:
            assert ds.load(sid).source_image.size[0] > 0


def test_undecodable_id_is_named_by_its_row(tmp_path: Path) -> None:
    root = write_folder_dataset(tmp_path / "d", n_good=2, broken=False)
    data = (root / "samples.jsonl").read_bytes().replace(b'"id": "good1"', b'"id": "go\xffd1"')
    (root / "samples.jsonl").write_bytes(data)
    ds = FolderDataset(str(root), on_error="skip")
    assert ds.ids() == ["good0", "samples.jsonl-row2"]
    with pytest.raises(SampleError, match="samples.jsonl, row 2: not valid UTF-8"):
        ds.load("samples.jsonl-row2")


def test_runner_records_the_bad_row_and_goes_on(tmp_path: Path) -> None:
    from editlab.bench.runner import run

    root = write_folder_dataset(tmp_path / "d", n_good=3, broken=False)
    data = (root / "samples.jsonl").read_bytes()
    (root / "samples.jsonl").write_bytes(data.replace(b"make the square blue", b"make the squ\xe9re blue", 1))
    good = tmp_path / "good"
    good.mkdir()
    for i in range(3):
        shutil.copy(root / f"img{i}.png", good / f"good{i}.png")
    cfg = compose_cfg(["method=outputs", f"method.root={good}", "dataset=folder", f"dataset.root={root}",
                       "dataset.on_error=skip", f"results_dir={tmp_path / 'res'}", "metrics=none"])
    out = run(cfg, show_table=False)
    records = {r["id"]: r for r in map(json.loads, (out.run_dir / "samples.jsonl").read_text().splitlines())}
    assert records["good0"]["status"] == "error" and "byte offset" in records["good0"]["error"]
    assert [records[f"good{i}"]["status"] for i in (1, 2)] == ["ok", "ok"]


# --------------------------------------------------------------------------------------------------------
# The outputs method
# --------------------------------------------------------------------------------------------------------
def _imported(root: Path, **settings) -> ImportedOutputs:
    method = ImportedOutputs(root=str(root), **settings)
    method.setup(None)
    return method


def _edit(method: ImportedOutputs, dataset, sample_id: str) -> tuple[dict, Image.Image | None]:
    rec, image, _ = edit_one(method, dataset, sample_id, 0, None, torch.device("cpu"))
    return rec, image


def test_outputs_flat_missing_corrupt_and_resized(tmp_path: Path) -> None:
    data = write_folder_dataset(tmp_path / "d", n_good=3, broken=False)
    ds = FolderDataset(str(data))
    out = tmp_path / "out"
    out.mkdir()
    target = rgb(64, 64, 5)
    target.save(out / "good0.png")
    rgb(32, 48, 6).save(out / "good1.jpg")
    (out / "good2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    taxonomy = {"learning_strategy": "training-free", "conditions": ["prompt pair"]}
    method = _imported(out, label="mine", taxonomy=taxonomy)
    assert method.taxonomy.learning_strategy is LearningStrategy.TRAINING_FREE
    rec, image = _edit(method, ds, "good0")
    assert rec["status"] == "ok" and rec["info"] == {"layout": "flat", "file": "good0.png"}
    assert rec["runtime"] == "unknown (imported)" and rec["wall_time_s"] is None and rec["peak_mem_mb"] is None
    assert np.array_equal(np.asarray(image), np.asarray(target)) and "warnings" not in rec
    rec, image = _edit(method, ds, "good1")
    assert rec["status"] == "ok" and image.size == (64, 64)
    assert rec["warnings"] == ["imported image 32x48 resized to 64x64 (bicubic)"]
    rec, _ = _edit(method, ds, "good2")
    assert rec["status"] == "error" and "imported output is not a readable image" in rec["error"]
    (out / "good2.png").unlink()
    rec, _ = _edit(method, ds, "good2")
    assert rec["status"] == "error" and rec["error"] == (f"no imported output for sample 'good2': {out / 'good2'}.png "
                                                         f"(or .jpg/.jpeg/.webp) (layout flat) not found")


def test_outputs_gedit_layout(tmp_path: Path) -> None:
    ds = GEditBenchDataset(str(write_gedit(tmp_path / "g")), language="all")
    results = tmp_path / "results"
    for key, task, lang in (("k001", "color_alter", "en"), ("k001", "color_alter", "cn")):
        folder = results / "Kontext" / "fullset" / task / lang
        folder.mkdir(parents=True, exist_ok=True)
        rgb(48, 40, 1 if lang == "en" else 2).save(folder / f"{key}.png")
        rgb(48, 40, 9).save(folder / f"{key}_SRCIMG.png")
    method = _imported(results)  # results/<method>/fullset given as results/: the one method folder is found
    assert method.layout == "gedit" and method.root == results / "Kontext"
    rec, image = _edit(method, ds, "k001_cn")
    assert rec["info"]["file"] == "fullset/color_alter/cn/k001.png"
    assert np.array_equal(np.asarray(image), np.asarray(rgb(48, 40, 2)))
    rec, _ = _edit(method, ds, "k002_en")
    assert rec["status"] == "error" and "fullset/subject-remove/en/k002.png (layout gedit) not found" in rec["error"]


def test_outputs_imgedit_kris_rise_layouts(tmp_path: Path) -> None:
    imgedit = ImgEditDataset(str(write_imgedit(tmp_path / "i")))
    out = tmp_path / "imgedit_out"
    out.mkdir()
    rgb(50, 40, 3).save(out / "673.png")
    rec, _ = _edit(_imported(out), imgedit, "673")
    assert rec["status"] == "ok" and rec["info"] == {"layout": "imgedit", "file": "673.png"}

    kris = KRISBenchDataset(str(write_kris(tmp_path / "k")))
    out = tmp_path / "kris_out"
    (out / "multi-element_composition").mkdir(parents=True)
    rgb(39, 40, 4).save(out / "multi-element_composition" / "1.jpg")
    rec, _ = _edit(_imported(out), kris, "multi-element_composition-1")  # several inputs: the import takes them
    assert rec["status"] == "ok" and rec["info"]["file"] == "multi-element_composition/1.jpg"

    rise = RISEBenchDataset(str(write_rise(tmp_path / "r")))
    out = tmp_path / "rise_out"
    (out / "images" / "logical_reasoning").mkdir(parents=True)
    rgb(44, 44, 5).save(out / "images" / "logical_reasoning" / "logical_reasoning_1.jpeg")
    rec, _ = _edit(_imported(out), rise, "logical_reasoning_1")
    assert rec["status"] == "ok" and rec["info"]["layout"] == "rise"
    rec, _ = _edit(_imported(out, layout="kris"), rise, "logical_reasoning_1")
    assert rec["status"] == "error" and "layout 'kris' needs a kris sample" in rec["error"]


def test_outputs_pie_concatenation(tmp_path: Path) -> None:
    ds = PIEBenchDataset(str(write_pie_bench(tmp_path / "pie")))
    out = tmp_path / "output" / "ddim+p2p"
    edit = rgb(512, 512, 7)
    rel = ds.load("211000000001").meta["pie"]["image_path"]
    path = out / "annotation_images" / rel
    path.parent.mkdir(parents=True)
    canvas = Image.new("RGB", (1024, 512), (255, 0, 0))  # [source | edit], as run_editing_*.py saves it
    canvas.paste(edit, (512, 0))
    canvas.save(path, quality=100)
    rec, image = _edit(_imported(out), ds, "211000000001")
    assert rec["status"] == "ok" and rec["info"]["layout"] == "pie"
    assert rec["warnings"] == ["bottom-right 512x512 panel of a 1024x512 concatenation used as the edit"]
    assert np.abs(np.asarray(image, float) - np.asarray(edit, float)).mean() < 3  # the edit panel, JPEG-coded
    rec, _ = _edit(_imported(out), ds, "000000000000")
    assert rec["status"] == "error" and "annotation_images/0_random_140/000000000000.jpg (layout pie)" in rec["error"]
    rgb(512, 512, 8).save(out / "000000000000.png")  # auto: a flat file is found when the benchmark's layout has none
    rec, _ = _edit(_imported(out), ds, "000000000000")
    assert rec["status"] == "ok" and rec["info"] == {"layout": "flat", "file": "000000000000.png"}


def test_outputs_reads_an_editlab_run_folder(tmp_path: Path) -> None:
    from editlab.bench.runner import run

    data = write_folder_dataset(tmp_path / "d", n_good=3, broken=False)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in (0, 1):
        rgb(64, 64, 30 + i).save(flat / f"good{i}.png")
    base = ["dataset=folder", f"dataset.root={data}", f"results_dir={tmp_path / 'res'}", "metrics=none"]
    first = run(compose_cfg(["method=outputs", f"method.root={flat}", "method.label=first"] + base), show_table=False)
    method = _imported(tmp_path / "res")  # the one run folder under it
    assert method.layout == "editlab" and method.run_dir == first.run_dir
    rec, image = _edit(method, FolderDataset(str(data)), "good1")
    assert rec["status"] == "ok" and np.array_equal(np.asarray(image), np.asarray(rgb(64, 64, 31)))
    rec, _ = _edit(method, FolderDataset(str(data)), "good2")
    assert rec["status"] == "error" and "the imported run has no edit for 'good2': error: no imported output" \
        in rec["error"]


def test_imported_run_folder_ignores_the_backbone(tmp_path: Path) -> None:
    from editlab.bench.runner import run_dir_for

    def folder(method: str, backbone: str) -> Path:
        return run_dir_for(compose_cfg([f"method={method}", f"backbone={backbone}", f"method.root={tmp_path}"]
                                       if method == "outputs" else [f"method={method}", f"backbone={backbone}"]))

    assert folder("outputs", "toy") == folder("outputs", "shapesworld")  # no backbone is used: same edits
    assert folder("sdedit", "toy") != folder("sdedit", "shapesworld")


def test_outputs_config_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown layout 'zip', available: auto, editlab"):
        ImportedOutputs(root=str(tmp_path), layout="zip")
    with pytest.raises(ValueError, match="unknown learning_strategy 'magic', available: training-based"):
        ImportedOutputs(root=str(tmp_path), taxonomy={"learning_strategy": "magic"})
    with pytest.raises(ValueError, match="needs method.root=DIR"):
        ImportedOutputs().setup(None)
    with pytest.raises(FileNotFoundError, match="imported outputs folder not found"):
        ImportedOutputs(root=str(tmp_path / "nowhere")).setup(None)


# --------------------------------------------------------------------------------------------------------
# editlab data prepare for the new benchmarks
# --------------------------------------------------------------------------------------------------------
def test_prepare_new_benchmarks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert prepare.main(["emu_edit", "--root", str(tmp_path / "none"), "--offline"]) == 2
    assert "editlab's test is the hub's validation files" in capsys.readouterr().out
    root = write_imgedit(tmp_path / "i")
    assert prepare.main(["imgedit_uge", "--root", str(root)]) == 1
    assert "2 samples (expected 47)" in capsys.readouterr().out
    kris = write_kris(tmp_path / "k")
    assert prepare.main(["kris", "--root", str(kris)]) == 1  # counts unpublished; missing categories reported
    assert "category folder missing: count_change" in capsys.readouterr().out
    gedit = write_gedit(tmp_path / "g")
    assert prepare.main(["gedit", "--root", str(gedit)]) == 1
    assert "3 samples, expected 606" in capsys.readouterr().out


def test_prepare_fetches_rise_mini_from_github(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_datasets_benchmarks import _fake_github

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    src = write_rise(tmp_path / "src", name="data_total.json")
    files = {f"data/{p.relative_to(src).as_posix()}": p.read_bytes() for p in src.rglob("*") if p.is_file()}
    monkeypatch.setattr(prepare, "_urlopen", _fake_github(files))
    monkeypatch.setitem(prepare.BENCHMARKS["rise"].counts, "mini", 3)
    root = tmp_path / "rise"
    assert prepare.main(["rise", "--root", str(root), "--split", "mini"]) == 0
    assert (root / "data_total.json").is_file() and len(RISEBenchDataset(str(root), split="mini")) == 3


# --------------------------------------------------------------------------------------------------------
# Metrics against independent references
# --------------------------------------------------------------------------------------------------------
def _batch(edited: torch.Tensor, source: torch.Tensor, target: torch.Tensor | None = None,
           prompts: list[str | None] | None = None) -> EditBatch:
    n = edited.shape[0]
    return EditBatch(edited=edited, source=source, source_prompts=[None] * n, target_prompts=prompts or [None] * n,
                     target=target)


def test_pixel_distance_is_magicbrush_l1_l2() -> None:
    from editlab.metrics.similarity import PixelDistance

    g = torch.Generator().manual_seed(0)
    edited, target = torch.rand(3, 3, 20, 24, generator=g), torch.rand(3, 3, 20, 24, generator=g)
    l1 = PixelDistance("l1", reference="target").per_sample(_batch(edited, edited, target))
    l2 = PixelDistance("l2", reference="target").per_sample(_batch(edited, edited, target))
    for i in range(3):  # MagicBrush: nn.L1Loss / nn.MSELoss of one pair of ToTensor images
        assert l1[i].item() == pytest.approx(torch.nn.L1Loss()(edited[i], target[i]).item(), rel=1e-6)
        assert l2[i].item() == pytest.approx(torch.nn.MSELoss()(edited[i], target[i]).item(), rel=1e-6)
    half = torch.full((1, 3, 4, 4), 0.5)
    assert PixelDistance("l1", reference="source").per_sample(_batch(half, torch.zeros_like(half))).item() == 0.5
    assert PixelDistance().name == "gt_l1" and PixelDistance("l2", "source").name == "l2"
    assert torch.isnan(PixelDistance().per_sample(_batch(half, half))).all()  # no ground truth


def _tiny_vit(folder: Path) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64), add_pooling_layer=False).save_pretrained(folder)
    ViTImageProcessor(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def test_dino_similarity_follows_magicbrush_transform(tmp_path: Path) -> None:
    from scipy import spatial
    from torchvision import transforms
    from transformers import ViTModel

    from editlab.metrics.base import pil_to_unit
    from editlab.metrics.similarity import DINOSimilarity

    folder = _tiny_vit(tmp_path / "vit")
    metric = DINOSimilarity(backbone=str(folder), reference="target")
    assert metric.name == "gt_dino[vit]"
    model = ViTModel.from_pretrained(folder).eval()
    # MagicBrush's DINO transform at this backbone's size (256/224 of it), on PIL images
    reference = transforms.Compose([transforms.Resize(37, interpolation=3), transforms.CenterCrop(32),
                                    transforms.ToTensor(),
                                    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    for size, tol in (((37, 37), 1e-5), ((60, 45), 0.02)):  # no resize needed: exact; resized: PIL vs tensor bicubic
        a, b = rgb(*size, 1), rgb(*size, 2)
        with torch.no_grad():
            fa, fb = (model(pixel_values=reference(im).unsqueeze(0)).last_hidden_state[0, 0] for im in (a, b))
        expected = 1 - spatial.distance.cosine(fa.numpy(), fb.numpy())
        got = metric.per_sample(_batch(pil_to_unit(a)[None], pil_to_unit(a)[None], pil_to_unit(b)[None]))
        assert got.item() == pytest.approx(expected, abs=tol)
    same = pil_to_unit(rgb(37, 37, 3))[None]
    assert DINOSimilarity(backbone=str(folder), reference="source").per_sample(_batch(same, same)).item() \
        == pytest.approx(1.0, abs=1e-5)


def test_clip_t_and_source_psnr_against_references() -> None:
    from skimage.metrics import peak_signal_noise_ratio
    from transformers import CLIPModel, CLIPProcessor

    from editlab import ROOT
    from editlab.metrics.base import pil_to_unit
    from editlab.metrics.similarity import CLIPTextSimilarity, SourcePSNR

    images = [rgb(64, 64, 1), rgb(64, 64, 2)]
    prompts = ["a red circle on a blue background", "a green star"]
    edited = torch.stack([pil_to_unit(im) for im in images])
    metric = CLIPTextSimilarity()
    assert metric.name == "clip_t[sw-clip]"
    got = metric.per_sample(_batch(edited, edited, prompts=prompts))
    model = CLIPModel.from_pretrained(ROOT / "weights/shapesworld/clip").eval()
    processor = CLIPProcessor.from_pretrained(ROOT / "weights/shapesworld/clip")
    with torch.no_grad():
        out = model(**processor(text=prompts, images=images, return_tensors="pt", padding=True))
    expected = torch.nn.functional.cosine_similarity(out.image_embeds, out.text_embeds)
    assert torch.allclose(got, expected, atol=1e-4)
    noisy = (edited + 0.05 * torch.randn(edited.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    psnr = SourcePSNR().per_sample(_batch(noisy, edited))
    for i in range(2):
        assert psnr[i].item() == pytest.approx(
            peak_signal_noise_ratio(edited[i].numpy(), noisy[i].numpy(), data_range=1.0), rel=1e-4)


# --------------------------------------------------------------------------------------------------------
# End to end: two imported folders in one table, with the paired test's mark on the worse one
# --------------------------------------------------------------------------------------------------------
def test_two_imports_compare_with_significance_mark(tmp_path: Path) -> None:
    from editlab.bench.runner import run
    from editlab.bench.tables import build_model, render_tables

    data = write_folder_dataset(tmp_path / "d", n_good=8, broken=False)
    close, far = tmp_path / "close", tmp_path / "far"
    close.mkdir()
    far.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        src = np.asarray(Image.open(data / f"img{i}.png")).astype(int)
        for folder, sigma in ((close, 2), (far, 40)):
            noisy = np.clip(src + rng.normal(0, sigma, src.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / f"good{i}.png")
    runs = []
    for label, folder, strategy in (("Close-edit", close, "training-based"), ("Far-edit", far, "training-based")):
        cfg = compose_cfg(["method=outputs", f"method.root={folder}", f"method.label={label}",
                           f"method.taxonomy.learning_strategy={strategy}", "dataset=folder", f"dataset.root={data}",
                           f"results_dir={tmp_path / 'res'}", "metrics=none",
                           "+metrics.src_psnr={_target_:editlab.metrics.similarity.SourcePSNR}"])
        runs.append(run(cfg, show_table=False).run_dir)
    assert [r.name.split("-")[0] for r in runs] == ["Close", "Far"]
    model = build_model(runs)
    column = next(c for c, name in model.metric_of.items() if name == "src_psnr")
    cells = {row["meta"]["method"]: row["cells"][column] for row in model.rows}
    assert cells["Close-edit"].best and not cells["Close-edit"].worse
    assert cells["Far-edit"].worse and not cells["Far-edit"].best
    table = render_tables(runs)["markdown"]
    far_line = next(line for line in table.splitlines() if "Far-edit" in line)
    close_line = next(line for line in table.splitlines() if "Close-edit" in line)
    assert "†" in far_line and "†" not in close_line
    assert "–" in far_line  # runtime and memory unknown for imported edits
