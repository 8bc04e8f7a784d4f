"""Benchmark loaders on small fixtures written in each benchmark's published format, plus malformed variants.

``FIXTURE_WRITERS`` maps each benchmark dataset config to a function writing a valid fixture root, so config
tests can point ``dataset.root`` at it.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pytest
from fixtures_benchmarks import NEW_FIXTURE_WRITERS
from PIL import Image

from editlab.datasets import prepare
from editlab.datasets.editeval import EditEvalDataset, read_xlsx
from editlab.datasets.folder import DatasetFormatError, FolderDataset
from editlab.datasets.imagenhub import ImagenHubMaskDataset, ImagenHubTextDataset
from editlab.datasets.magicbrush import MagicBrushDataset, mask_from_image
from editlab.datasets.pie_bench import PIEBenchDataset, decode_rle
from editlab.datasets.tedbench import TEdBenchDataset
from editlab.types import SampleError, TaskType


# --------------------------------------------------------------------------------------------------------
# Fixture writers
# --------------------------------------------------------------------------------------------------------
def _rgb(w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:] = rng.integers(0, 255, 3, dtype=np.uint8)
    arr[h // 4: h // 2, w // 4: w // 2] = rng.integers(0, 255, 3, dtype=np.uint8)
    return Image.fromarray(arr)


def encode_pie_rle(mask: np.ndarray) -> list[int]:
    """PIE's run-length encoding of a binary mask: (start, length) of each run of ones, row-major."""
    flat = mask.astype(bool).ravel()
    out: list[int] = []
    i = 0
    while i < flat.size:
        if flat[i]:
            j = i
            while j < flat.size and flat[j]:
                j += 1
            out += [i, j - i]
            i = j
        else:
            i += 1
    return out


def pie_drawn_mask() -> np.ndarray:
    """A mask drawn directly: a rectangle, a disc and the last image row."""
    mask = np.zeros((512, 512), np.uint8)
    mask[100:180, 200:330] = 1
    yy, xx = np.mgrid[:512, :512]
    mask[(yy - 400) ** 2 + (xx - 120) ** 2 < 40**2] = 1
    mask[511, :] = 1
    return mask


PIE_IDS = ("000000000000", "111000000000", "211000000001")


def write_pie_bench(root: Path) -> Path:
    """PIE-Bench's data folder: mapping_file.json + annotation_images/<type folder>/<id>.jpg."""
    drawn = pie_drawn_mask()
    rle = encode_pie_rle(drawn)
    rle[-1] += 100  # the last run reaches past the image end: PIE clips it
    entries = {
        PIE_IDS[0]: ("0_random_140/000000000000.jpg", "0", (512, 512)),
        PIE_IDS[1]: ("1_change_object_80/1_artificial/1_animal/111000000000.jpg", "1", (640, 480)),
        PIE_IDS[2]: ("2_add_object_80/1_artificial/211000000001.jpg", "2", (512, 512)),
    }
    mapping = {}
    for i, (key, (rel, type_id, size)) in enumerate(entries.items()):
        path = root / "annotation_images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        _rgb(*size, seed=i).save(path, quality=95)
        mapping[key] = {
            "image_path": rel,
            "original_prompt": "a cat sitting on a wooden chair",
            "editing_prompt": "a [dog] sitting on a [metal] chair",
            "editing_instruction": "Make the cat a dog",
            "editing_type_id": type_id,
            "blended_word": "cat dog",
            "mask": rle,
        }
    (root / "mapping_file.json").write_text(json.dumps(mapping))
    return root


def write_xlsx(path: Path, rows: list[list[str | None]], merges: tuple[str, ...] = ()) -> None:
    """A minimal Office Open XML workbook with shared strings, as Excel writes them."""
    strings: list[str] = []

    def ref(r: int, c: int) -> str:
        return f"{chr(65 + c)}{r}"

    sheet_rows = []
    for r, row in enumerate(rows, start=1):
        cells = []
        for c, value in enumerate(row):
            if value is None:
                continue
            if value not in strings:
                strings.append(value)
            cells.append(f'<c r="{ref(r, c)}" t="s"><v>{strings.index(value)}</v></c>')
        sheet_rows.append(f'<row r="{r}">{"".join(cells)}</row>')
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel_ns = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    merge_xml = (f'<mergeCells count="{len(merges)}">' + "".join(f'<mergeCell ref="{m}"/>' for m in merges)
                 + "</mergeCells>") if merges else ""
    files = {
        "[Content_Types].xml": '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/'
                               'content-types"/>',
        "xl/workbook.xml": f'<?xml version="1.0"?><workbook xmlns="{main}" xmlns:r="{rel_ns}"><sheets>'
                           f'<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": '<?xml version="1.0"?><Relationships xmlns="http://schemas.openxmlformats.org/'
                                      'package/2006/relationships"><Relationship Id="rId1" Type="worksheet" '
                                      'Target="worksheets/sheet1.xml"/></Relationships>',
        "xl/worksheets/sheet1.xml": f'<?xml version="1.0"?><worksheet xmlns="{main}"><sheetData>'
                                    f'{"".join(sheet_rows)}</sheetData>{merge_xml}</worksheet>',
        "xl/sharedStrings.xml": f'<?xml version="1.0"?><sst xmlns="{main}" count="{len(strings)}">'
                                + "".join(f"<si><t>{escape(s)}</t></si>" for s in strings) + "</sst>",
    }
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)


EDITEVAL_ROWS: list[list[str | None]] = [
    ["Edit Class", "Source Prompt", "Target Prompt", "Instruction"],
    ["Object Addition", "a table", "a table with a vase", "Add a vase on the table"],
    [None, "a field", "a field with a horse", "Add a horse"],
    ["Object Removal", "a dog on a sofa", "a sofa", "Remove the dog"],
    ["Action Change", "a standing dog", "a jumping dog", "Make the dog jump"],
]


def write_editeval(root: Path, rows: list[list[str | None]] | None = None) -> Path:
    """EditEval_v1/Dataset: the 7 task folders (note object_removel) and the prompts spreadsheet."""
    for folder, name, seed in (("object_addition", "1.jpg", 0), ("object_addition", "2.jpeg", 1),
                               ("object_removel", "1.jpg", 2), ("action_change", "1.png", 3)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        _rgb(80, 60, seed).save(root / folder / name)
    for folder in ("object_replacement", "background_change", "style_change", "texture_change"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    write_xlsx(root / "editing_prompts_collection.xlsx", rows or EDITEVAL_ROWS, merges=("A2:A3",))
    return root


def _erased(source: Image.Image, box: tuple[int, int, int, int]) -> Image.Image:
    """A MagicBrush-style mask: the source image with ``box`` erased to transparent."""
    arr = np.asarray(source.convert("RGBA")).copy()
    x0, y0, x1, y1 = box
    arr[y0:y1, x0:x1] = 0
    return Image.fromarray(arr)


MB_BOXES = {("100", 1): (8, 8, 24, 24), ("100", 2): (30, 30, 50, 40), ("200", 1): (0, 0, 10, 64)}


def write_magicbrush(root: Path, split: str = "test") -> Path:
    """The released split folder: edit_sessions.json, images/<img_id>/..., global_descriptions.json."""
    folder = root / split
    sessions: dict[str, list[dict[str, str]]] = {}
    captions: dict[str, dict[str, str]] = {}
    for img_id, turns in (("100", 2), ("200", 1)):
        d = folder / "images" / img_id
        d.mkdir(parents=True, exist_ok=True)
        current = _rgb(64, 64, int(img_id))
        current.save(d / f"{img_id}-input.png")
        captions[img_id] = {f"{img_id}-input.png": f"photo {img_id}"}
        sessions[img_id] = []
        for k in range(1, turns + 1):
            _erased(current, MB_BOXES[(img_id, k)]).save(d / f"{img_id}-mask{k}.png")
            output = _rgb(64, 64, int(img_id) + k)
            output.save(d / f"{img_id}-output{k}.png")
            captions[img_id][f"{img_id}-output{k}.png"] = f"photo {img_id} after turn {k}"
            source = f"{img_id}-input.png" if k == 1 else f"{img_id}-output{k - 1}.png"
            sessions[img_id].append({"input": source, "mask": f"{img_id}-mask{k}.png",
                                     "output": f"{img_id}-output{k}.png", "instruction": f"edit {img_id}.{k}"})
            current = output
    (folder / "edit_sessions.json").write_text(json.dumps(sessions))
    (folder / "global_descriptions.json").write_text(json.dumps(captions))
    return root


def write_imagenhub(root: Path, split: str = "filtered") -> Path:
    """A Hugging Face copy exported as <split>/metadata.jsonl with image files (hub column names)."""
    folder = root / split
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (img_id, turn) in enumerate((("327726", 1), ("139306", 2))):
        source = _rgb(48, 48, i)
        source.save(folder / "images" / f"{img_id}_{turn}_source.png")
        _rgb(48, 48, i + 10).save(folder / "images" / f"{img_id}_{turn}_target.png")
        mask = np.asarray(source.convert("RGBA")).copy()
        mask[..., 3] = 255
        mask[10:20, 5:30, 3] = 40  # a soft, mostly transparent region: the edit
        mask[20:22, 5:30, 3] = 200  # a mostly opaque fringe: kept
        Image.fromarray(mask).save(folder / "images" / f"{img_id}_{turn}_mask.png")
        rows.append({"img_id": img_id, "turn_index": turn, "instruction": f"make it red {i}",
                     "source_global_caption": f"a photo {i}", "target_global_caption": f"a red photo {i}",
                     "target_local_caption": "red", "source_img": f"images/{img_id}_{turn}_source.png",
                     "target_img": f"images/{img_id}_{turn}_target.png",
                     "mask_img": f"images/{img_id}_{turn}_mask.png"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


TED_PAIRS = [{"img_name": "dog2_standing.png", "target_text": "A photo of a sitting dog."},
             {"img_name": "dog2_standing.png", "target_text": "A photo of a jumping dog."},
             {"img_name": "zebra.jpeg", "target_text": "A photo of a horse."}]


def write_tedbench(root: Path, pairs: list[dict] | None = None) -> Path:
    """Imagic's tedbench folder: input_list.json + originals/."""
    (root / "originals").mkdir(parents=True, exist_ok=True)
    _rgb(70, 50, 0).save(root / "originals" / "dog2_standing.png")
    _rgb(40, 40, 1).save(root / "originals" / "zebra.jpeg")
    (root / "input_list.json").write_text(json.dumps(pairs or TED_PAIRS, indent=2))
    return root


FIXTURE_WRITERS: dict[str, Callable[[Path], Path]] = {
    "pie_bench": write_pie_bench,
    "editeval": write_editeval,
    "magicbrush": write_magicbrush,
    "imagenhub_text": write_imagenhub,
    "imagenhub_mask": write_imagenhub,
    "tedbench": write_tedbench,
    **NEW_FIXTURE_WRITERS,
}


@pytest.fixture
def count_opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Records every PIL.Image.open call (decoding starts there)."""
    calls: list[str] = []
    real = Image.open

    def counting(fp, *args, **kwargs):  # noqa: ANN001
        calls.append(str(fp))
        return real(fp, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting)
    return calls


# --------------------------------------------------------------------------------------------------------
# PIE-Bench
# --------------------------------------------------------------------------------------------------------
def test_pie_rle_mask_matches_drawn_mask_and_fields(tmp_path: Path, count_opens: list[str]) -> None:
    root = write_pie_bench(tmp_path / "pie")
    ds = PIEBenchDataset(str(root))
    assert ds.ids() == list(PIE_IDS) and count_opens == []  # construction decodes nothing
    s = ds.load(PIE_IDS[0])
    assert len(count_opens) == 1
    assert np.array_equal(np.asarray(s.mask) > 0, pie_drawn_mask().astype(bool))
    assert s.mask.mode == "L" and s.mask.size == (512, 512)
    assert s.source_prompt == "a cat sitting on a wooden chair"
    assert s.target_prompt == "a dog sitting on a metal chair" and s.instruction == "Make the cat a dog"
    assert s.task_type is None  # random editing spans several survey types
    assert s.meta["pie"]["id"] == PIE_IDS[0] and s.meta["pie"]["editing_type_id"] == 0
    assert s.meta["pie"]["editing_prompt"] == "a [dog] sitting on a [metal] chair"
    assert s.meta["pie"]["blended_word"] == ["cat", "dog"]
    s1 = ds.load(PIE_IDS[1])
    assert s1.source_image.size == (512, 512)  # 640x480 centre-cropped and resized as load_512 does
    assert s1.task_type is TaskType.OBJECT_REPLACEMENT
    assert ds.load(PIE_IDS[2]).task_type is TaskType.OBJECT_ADDITION
    bordered = decode_rle([], border=True)
    assert bordered[0].all() and bordered[:, -1].all() and bordered[1:-1, 1:-1].sum() == 0


def test_pie_filters_and_task_map(tmp_path: Path) -> None:
    root = write_pie_bench(tmp_path / "pie")
    assert PIEBenchDataset(str(root), task_types=["object_addition"]).ids() == [PIE_IDS[2]]
    assert PIEBenchDataset(str(root), limit=2).ids() == list(PIE_IDS[:2])
    assert PIEBenchDataset(str(root), task_map={0: "style_change"}, task_types=["style_change"]).ids() == [PIE_IDS[0]]
    with pytest.raises(ValueError, match="single split 'test'"):
        PIEBenchDataset(str(root), split="train")


def test_pie_missing_mapping_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="mapping_file.json"):
        PIEBenchDataset(str(tmp_path / "nothing"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("image", "image file not found"),
        ("type", "unknown editing_type_id '12'"),
        ("mask", "mask size mismatch: a run starts at pixel"),
        ("field", "missing field(s) editing_prompt"),
    ],
)
def test_pie_malformed_entry(tmp_path: Path, change: str, message: str) -> None:
    root = write_pie_bench(tmp_path / "pie")
    mapping = json.loads((root / "mapping_file.json").read_text())
    entry = mapping[PIE_IDS[1]]
    if change == "image":
        (root / "annotation_images" / entry["image_path"]).unlink()
    elif change == "type":
        entry["editing_type_id"] = "12"
    elif change == "mask":
        big = np.zeros((1024, 1024), np.uint8)
        big[900:950, 10:20] = 1  # a mask annotated on a 1024x1024 image
        entry["mask"] = encode_pie_rle(big)
    else:
        del entry["editing_prompt"]
    (root / "mapping_file.json").write_text(json.dumps(mapping))
    where = f"mapping_file.json, entry 1 ('{PIE_IDS[1]}')"
    with pytest.raises(DatasetFormatError) as info:
        PIEBenchDataset(str(root))
    assert where in str(info.value) and message in str(info.value)
    ds = PIEBenchDataset(str(root), on_error="skip")
    assert ds.ids() == list(PIE_IDS)
    with pytest.raises(SampleError) as info:
        ds.load(PIE_IDS[1])
    assert where in str(info.value) and message in str(info.value)
    assert ds.load(PIE_IDS[0]).mask is not None  # the other samples are unaffected


def test_pie_unreadable_image_fails_one_sample(tmp_path: Path) -> None:
    root = write_pie_bench(tmp_path / "pie")
    (root / "annotation_images" / "0_random_140/000000000000.jpg").write_bytes(b"not a jpeg")
    ds = PIEBenchDataset(str(root))
    with pytest.raises(SampleError, match="not a readable image.*entry '000000000000'"):
        ds.load(PIE_IDS[0])


# --------------------------------------------------------------------------------------------------------
# EditEval
# --------------------------------------------------------------------------------------------------------
def test_editeval_reads_spreadsheet_and_folders(tmp_path: Path, count_opens: list[str]) -> None:
    root = write_editeval(tmp_path / "ee")
    assert read_xlsx(root / "editing_prompts_collection.xlsx")[2] == (3, [None, "a field", "a field with a horse",
                                                                          "Add a horse"])
    ds = EditEvalDataset(str(root))
    assert ds.ids() == ["object_addition-1", "object_addition-2", "object_removel-1", "action_change-1"]
    assert count_opens == []
    s = ds.load("object_addition-2")
    assert s.source_image.size == (80, 60) and s.task_type is TaskType.OBJECT_ADDITION
    assert (s.source_prompt, s.target_prompt, s.instruction) == ("a field", "a field with a horse", "Add a horse")
    assert ds.load("object_removel-1").task_type is TaskType.OBJECT_REMOVAL
    assert ds.load("action_change-1").task_type is TaskType.POSE_ACTION
    assert EditEvalDataset(str(root), task_types=["object_removal"]).ids() == ["object_removel-1"]
    assert EditEvalDataset(str(root), size=32).load("object_removel-1").source_image.size == (32, 32)


def test_editeval_first_class_in_header_and_csv(tmp_path: Path) -> None:
    root = write_editeval(tmp_path / "ee")
    rows = [["Object Addition", "Source Prompt", "Target Prompt", "Instruction"]] + [r for r in EDITEVAL_ROWS[1:]]
    rows[1] = [None, *rows[1][1:]]
    with (root / "prompts.csv").open("w") as f:
        f.write("\n".join(",".join(c or "" for c in r) for r in rows) + "\n")
    ds = EditEvalDataset(str(root), spreadsheet="prompts.csv")
    assert ds.ids()[:2] == ["object_addition-1", "object_addition-2"]


@pytest.mark.parametrize(
    ("change", "where", "message"),
    [
        ("image", "row 4", "image file not found"),
        ("row", "row 3", "unreadable row: empty Target Prompt"),
        ("class", "row 5", "unknown edit class 'Teleport'"),
    ],
)
def test_editeval_malformed(tmp_path: Path, change: str, where: str, message: str) -> None:
    rows = [list(r) for r in EDITEVAL_ROWS]
    root = write_editeval(tmp_path / "ee", rows)
    if change == "image":
        (root / "object_removel" / "1.jpg").unlink()
    elif change == "row":
        rows[2][2] = None
        write_xlsx(root / "editing_prompts_collection.xlsx", rows)
    else:
        rows[4][0] = "Teleport"
        write_xlsx(root / "editing_prompts_collection.xlsx", rows)
    with pytest.raises(DatasetFormatError) as info:
        EditEvalDataset(str(root))
    assert f"editing_prompts_collection.xlsx, {where}" in str(info.value) and message in str(info.value)
    ds = EditEvalDataset(str(root), on_error="skip")
    bad = [i for i in ds.ids() if i in ds.issues]
    assert len(bad) == 1 and len(ds.ids()) == 4
    with pytest.raises(SampleError, match=message):
        ds.load(bad[0])
    ds.load(next(i for i in ds.ids() if i not in ds.issues))


def test_editeval_unreadable_or_missing_spreadsheet(tmp_path: Path) -> None:
    root = write_editeval(tmp_path / "ee")
    (root / "editing_prompts_collection.xlsx").write_bytes(b"garbage")
    with pytest.raises(DatasetFormatError, match="not a readable spreadsheet"):
        EditEvalDataset(str(root))
    with pytest.raises(FileNotFoundError, match="editing_prompts_collection.xlsx"):
        EditEvalDataset(str(tmp_path / "none"))


# --------------------------------------------------------------------------------------------------------
# MagicBrush
# --------------------------------------------------------------------------------------------------------
def _box_mask(box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((64, 64), bool)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = True
    return m


def test_magicbrush_all_turn_two_turn_session(tmp_path: Path, count_opens: list[str]) -> None:
    root = write_magicbrush(tmp_path / "mb")
    ds = MagicBrushDataset(str(root))
    assert ds.ids() == ["100_t1", "100_t2", "200_t1"] and count_opens == []
    t1, t2 = ds.load("100_t1"), ds.load("100_t2")
    images = root / "test" / "images" / "100"
    out1 = np.asarray(Image.open(images / "100-output1.png").convert("RGB"))
    assert np.array_equal(np.asarray(t2.source_image), out1)  # turn 2 starts from turn 1's ground truth
    assert np.array_equal(np.asarray(t1.target_image), out1)
    assert np.array_equal(np.asarray(t1.mask) > 0, _box_mask(MB_BOXES[("100", 1)]))
    assert np.array_equal(np.asarray(t2.mask) > 0, _box_mask(MB_BOXES[("100", 2)]))
    assert t2.instruction == "edit 100.2" and t2.meta["magicbrush"]["turn_index"] == 2
    assert t1.source_prompt == "photo 100" and t1.target_prompt == "photo 100 after turn 1"
    assert MagicBrushDataset(str(root / "test"), limit=1).ids() == ["100_t1"]  # root may be the split folder


def test_magicbrush_final_turn(tmp_path: Path) -> None:
    root = write_magicbrush(tmp_path / "mb")
    ds = MagicBrushDataset(str(root), evaluation="final_turn")
    assert ds.ids() == ["100", "200"]
    s = ds.load("100")
    images = root / "test" / "images" / "100"
    assert np.array_equal(np.asarray(s.source_image), np.asarray(Image.open(images / "100-input.png")))
    assert np.array_equal(np.asarray(s.target_image), np.asarray(Image.open(images / "100-output2.png")))
    union = _box_mask(MB_BOXES[("100", 1)]) | _box_mask(MB_BOXES[("100", 2)])
    assert np.array_equal(np.asarray(s.mask) > 0, union)
    assert s.meta["magicbrush"]["turn_instructions"] == ["edit 100.1", "edit 100.2"]
    assert s.instruction == "edit 100.1; edit 100.2" and s.meta["magicbrush"]["turns"] == 2
    with pytest.raises(ValueError, match="evaluation must be one of"):
        MagicBrushDataset(str(root), evaluation="best_turn")


def test_magicbrush_iterative_ids_chains_and_scoring(tmp_path: Path) -> None:
    root = write_magicbrush(tmp_path / "mb")
    for evaluation, ids in (("all_turn", ["100_t1", "100_t2", "200_t1"]), ("final_turn", ["100", "200"])):
        plain = MagicBrushDataset(str(root), evaluation=evaluation)  # default: ground-truth inputs, ids unchanged
        assert plain.ids() == ids
        assert all(plain.chain_from(i) is None and plain.scored(i) for i in ids)
        assert "iterative" not in plain.load(ids[-1]).meta["magicbrush"]
    for evaluation in ("all_turn", "final_turn"):
        ds = MagicBrushDataset(str(root), evaluation=evaluation, iterative=True)
        assert ds.ids() == ["100_t1", "100_t2", "200_t1"]
        assert [ds.chain_from(i) for i in ds.ids()] == [None, "100_t1", None]
        assert [ds.source_key(i) for i in ds.ids()] == ["100", "100", "200"]  # a session stays on one shard
        assert [ds.scored(i) for i in ds.ids()] == [evaluation == "all_turn", True, True]
        t2 = ds.load("100_t2")  # its own instruction, mask and ground truth; the runner swaps in the source
        assert t2.instruction == "edit 100.2" and t2.meta["magicbrush"]["turn_index"] == 2
        assert t2.meta["magicbrush"]["iterative"] is True
        assert np.array_equal(np.asarray(t2.mask) > 0, _box_mask(MB_BOXES[("100", 2)]))


def test_magicbrush_iterative_orders_hub_rows_by_turn(tmp_path: Path) -> None:
    folder = tmp_path / "hub" / "dev"
    folder.mkdir(parents=True)
    rows = []
    for img_id, turn in (("7", 2), ("8", 1), ("7", 1)):
        for col, seed in (("source_img", 1), ("target_img", 2)):
            _rgb(16, 16, seed).save(folder / f"{img_id}_{turn}_{col}.png")
        rows.append({"img_id": img_id, "turn_index": turn, "instruction": f"edit {img_id}.{turn}",
                     "source_img": f"{img_id}_{turn}_source_img.png", "target_img": f"{img_id}_{turn}_target_img.png"})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert MagicBrushDataset(str(tmp_path / "hub"), split="dev").ids() == ["7_t2", "8_t1", "7_t1"]
    ds = MagicBrushDataset(str(tmp_path / "hub"), split="dev", iterative=True, evaluation="final_turn")
    assert ds.ids() == ["7_t1", "7_t2", "8_t1"] and ds.chain_from("7_t2") == "7_t1"
    assert [ds.scored(i) for i in ds.ids()] == [False, True, True]


def test_magicbrush_malformed(tmp_path: Path) -> None:
    root = write_magicbrush(tmp_path / "mb")
    folder = root / "test"
    (folder / "images" / "100" / "100-output2.png").unlink()
    with pytest.raises(DatasetFormatError, match=r"edit_sessions.json, session '100' turn 2: output file not found"):
        MagicBrushDataset(str(root))
    ds = MagicBrushDataset(str(root), on_error="skip")
    with pytest.raises(SampleError, match="output file not found.*100-output2.png"):
        ds.load("100_t2")
    ds.load("100_t1")
    # a wrong-sized mask fails that sample at load, naming both files
    Image.new("RGBA", (32, 32)).save(folder / "images" / "200" / "200-mask1.png")
    with pytest.raises(SampleError, match=r"mask size \(32, 32\) differs from image size \(64, 64\): mask "
                                          r"200-mask1.png vs image 200-input.png"):
        ds.load("200_t1")
    _rgb(64, 64, 102).save(folder / "images" / "100" / "100-output2.png")
    sessions = json.loads((folder / "edit_sessions.json").read_text())
    del sessions["200"][0]["instruction"]
    (folder / "edit_sessions.json").write_text(json.dumps(sessions))
    with pytest.raises(DatasetFormatError, match="session '200' turn 1: missing field"):
        MagicBrushDataset(str(root), on_error="raise", evaluation="final_turn")
    with pytest.raises(FileNotFoundError, match="edit_sessions.json"):
        MagicBrushDataset(str(root), split="dev")


def test_magicbrush_hub_layouts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a JSON-lines export of the hub dataset works with the standard library
    root = write_imagenhub(tmp_path / "mb", split="dev")
    ds = MagicBrushDataset(str(root), split="dev")
    assert ds.ids() == ["327726_t1", "139306_t2"]
    s = ds.load("139306_t2")
    assert s.instruction == "make it red 1" and (np.asarray(s.mask) > 0).sum() == 10 * 25
    meta = root / "dev" / "metadata.jsonl"
    meta.write_text(meta.read_text() + meta.read_text().splitlines()[0] + "\n")  # the first row twice
    with pytest.raises(DatasetFormatError, match=r"metadata.jsonl, row 2: duplicate turn 1 of session '327726'"):
        MagicBrushDataset(str(root), split="dev")
    # parquet shards need a parquet engine: without one the error names the package
    data = tmp_path / "pq" / "data"
    data.mkdir(parents=True)
    (data / "dev-00000-of-00001.parquet").write_bytes(b"PAR1")

    def no_engine(*args, **kwargs):  # noqa: ANN002, ANN003
        raise ImportError("Unable to find a usable engine")

    monkeypatch.setattr("pandas.read_parquet", no_engine)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        MagicBrushDataset(str(tmp_path / "pq"), split="dev")


def test_magicbrush_parquet_roundtrip(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pandas as pd

    buf = io.BytesIO()
    _rgb(16, 16, 0).save(buf, format="PNG")
    png = buf.getvalue()
    frame = pd.DataFrame({"img_id": ["5"], "turn_index": [1], "instruction": ["go"],
                          "source_img": [{"bytes": png, "path": None}], "target_img": [{"bytes": png, "path": None}],
                          "mask_img": [{"bytes": png, "path": None}]})
    (tmp_path / "data").mkdir()
    frame.to_parquet(tmp_path / "data" / "dev-00000-of-00001.parquet")
    ds = MagicBrushDataset(str(tmp_path), split="dev", use_mask=False)
    assert ds.ids() == ["5_t1"] and ds.load("5_t1").source_image.size == (16, 16)


def test_mask_from_image_conventions() -> None:
    src = _rgb(20, 20, 0)
    flat = np.asarray(src).copy()
    flat[2:5, 3:9] = 0  # erased region flattened to black, no alpha
    got = np.asarray(mask_from_image(Image.fromarray(flat), src)) > 0
    expected = np.zeros((20, 20), bool)
    expected[2:5, 3:9] = True
    assert np.array_equal(got, expected)
    bw = np.zeros((20, 20), np.uint8)
    bw[5:7] = 255
    assert (np.asarray(mask_from_image(Image.fromarray(bw))) > 0).sum() == 40


# --------------------------------------------------------------------------------------------------------
# ImagenHub
# --------------------------------------------------------------------------------------------------------
def test_imagenhub_text_and_mask_sets(tmp_path: Path, count_opens: list[str]) -> None:
    root = write_imagenhub(tmp_path / "ih")
    text = ImagenHubTextDataset(str(root))
    assert text.ids() == ["sample_327726_1", "sample_139306_2"] and count_opens == []
    s = text.load("sample_327726_1")
    assert (s.source_prompt, s.target_prompt, s.instruction) == ("a photo 0", "a red photo 0", "make it red 0")
    assert s.mask is None and s.target_image is not None
    m = ImagenHubMaskDataset(str(root)).load("sample_139306_2")
    expected = np.zeros((48, 48), bool)
    expected[10:20, 5:30] = True
    assert np.array_equal(np.asarray(m.mask) > 0, expected)
    assert m.meta["imagenhub"]["target_local_caption"] == "red"
    with pytest.raises(ValueError, match="unknown ImagenHub split"):
        ImagenHubTextDataset(str(root), split="test")
    with pytest.raises(FileNotFoundError, match="imagenhub_mask"):
        ImagenHubMaskDataset(str(root), split="dev")


def test_imagenhub_malformed(tmp_path: Path) -> None:
    root = write_imagenhub(tmp_path / "ih")
    meta = root / "filtered" / "metadata.jsonl"
    rows = [json.loads(line) for line in meta.read_text().splitlines()]
    del rows[1]["target_global_caption"]
    meta.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DatasetFormatError, match=r"metadata.jsonl, row 1: unreadable row: missing target_global"):
        ImagenHubMaskDataset(str(root))
    ds = ImagenHubMaskDataset(str(root), on_error="skip")
    with pytest.raises(SampleError, match="missing target_global_caption"):
        ds.load("sample_139306_2")
    Image.new("RGBA", (10, 10)).save(root / "filtered" / rows[0]["mask_img"])
    with pytest.raises(SampleError, match=r"mask size \(10, 10\) differs from image size \(48, 48\)"):
        ds.load("sample_327726_1")


# --------------------------------------------------------------------------------------------------------
# TEdBench
# --------------------------------------------------------------------------------------------------------
def test_tedbench(tmp_path: Path, count_opens: list[str]) -> None:
    root = write_tedbench(tmp_path / "ted")
    ds = TEdBenchDataset(str(root))
    assert ds.ids() == ["000_dog2_standing", "001_dog2_standing", "002_zebra"] and count_opens == []
    s = ds.load("002_zebra")
    assert s.target_prompt == "A photo of a horse." and s.source_prompt is None and s.mask is None
    assert ds.source_key("000_dog2_standing") == ds.source_key("001_dog2_standing") == "dog2_standing.png"
    assert TEdBenchDataset(str(root), limit=1).ids() == ["000_dog2_standing"]


def test_tedbench_malformed(tmp_path: Path) -> None:
    pairs = [dict(p) for p in TED_PAIRS] + [{"img_name": "bird.jpeg", "target_text": "A bird eating a fish."},
                                            {"img_name": "zebra.jpeg"}]
    root = write_tedbench(tmp_path / "ted", pairs)
    with pytest.raises(DatasetFormatError, match=r"input_list.json, entry 3: image file not found: .*bird.jpeg"):
        TEdBenchDataset(str(root))
    ds = TEdBenchDataset(str(root), on_error="skip")
    with pytest.raises(SampleError, match="entry 4: unreadable row: missing target_text"):
        ds.load("004_zebra")
    assert ds.load("002_zebra").target_prompt == "A photo of a horse."


# --------------------------------------------------------------------------------------------------------
# Folder (pilot) dataset
# --------------------------------------------------------------------------------------------------------
def test_folder_csv_example_and_skip(tmp_path: Path, count_opens: list[str]) -> None:
    _rgb(32, 32, 0).save(tmp_path / "shoe.jpg")
    Image.new("L", (32, 32), 255).save(tmp_path / "shoe_mask.png")
    (tmp_path / "samples.csv").write_text(
        "id,image,source_prompt,target_prompt,instruction,mask,task_type\n"
        "shoe-01,shoe.jpg,a red shoe,a blue shoe,make the shoe blue,shoe_mask.png,color_change\n"
        "shoe-02,shoe.jpg,a red shoe,a red boot,,,object_replacement\n"
        "shoe-03,missing.jpg,a,b,,,color_change\n"
        "shoe-04,shoe.jpg,a,b,,,recolour\n"
    )
    with pytest.raises(DatasetFormatError, match=r"samples.csv, row 4: image file not found"):
        FolderDataset(str(tmp_path), samples="samples.csv")
    ds = FolderDataset(str(tmp_path), samples="samples.csv", on_error="skip")
    assert ds.ids() == ["shoe-01", "shoe-02", "shoe-03", "shoe-04"] and count_opens == []
    s = ds.load("shoe-01")
    assert s.task_type is TaskType.COLOR_CHANGE and s.mask is not None and s.instruction == "make the shoe blue"
    assert ds.load("shoe-02").instruction is None and ds.load("shoe-02").mask is None
    with pytest.raises(SampleError, match="row 4: image file not found"):
        ds.load("shoe-03")
    with pytest.raises(SampleError, match="row 5: unknown task_type 'recolour'"):
        ds.load("shoe-04")
    assert ds.source_key("shoe-01") == ds.source_key("shoe-02") == "shoe.jpg"
    assert FolderDataset(str(tmp_path), samples="samples.csv", on_error="skip",
                         task_types=["object_replacement"]).ids() == ["shoe-02"]
    with pytest.raises(ValueError, match="on_error must be one of"):
        FolderDataset(str(tmp_path), samples="samples.csv", on_error="ignore")


# --------------------------------------------------------------------------------------------------------
# editlab data prepare
# --------------------------------------------------------------------------------------------------------
def test_prepare_prints_what_to_place_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "pie"
    assert prepare.main(["pie_bench", "--root", str(root), "--offline"]) == 2
    out = capsys.readouterr().out
    assert f"{root}/mapping_file.json" in out and f"{root}/annotation_images/0_random_140/" in out
    assert prepare.main(["magicbrush", "--root", str(root), "--split", "test"]) == 2
    assert f"{root}/test/edit_sessions.json" in capsys.readouterr().out
    mb = write_magicbrush(tmp_path / "mb")
    assert prepare.main(["magicbrush", "--root", str(mb)]) == 1
    assert "2 sessions, expected 535" in capsys.readouterr().out


def test_prepare_verifies_counts_and_checksums(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    root = write_pie_bench(tmp_path / "pie")
    assert prepare.main(["pie_bench", "--root", str(root)]) == 1  # 3 samples, not PIE-Bench's 700
    assert "3 samples, expected 700" in capsys.readouterr().out
    monkeypatch.setitem(prepare.BENCHMARKS["pie_bench"].counts, "test", 3)
    monkeypatch.setitem(prepare.BENCHMARKS["pie_bench"].image_counts, "test", 3)
    assert prepare.main(["pie_bench", "--root", str(root)]) == 0
    assert (root / prepare.MANIFEST).is_file() and "recorded SHA-256 of 4 files" in capsys.readouterr().out
    assert prepare.main(["pie_bench", "--root", str(root)]) == 0
    image = root / "annotation_images" / "0_random_140" / "000000000000.jpg"
    image.write_bytes(image.read_bytes()[:-10])
    assert prepare.main(["pie_bench", "--root", str(root)]) == 1
    assert "checksum mismatch: annotation_images/0_random_140/000000000000.jpg" in capsys.readouterr().out
    listing = tmp_path / "sums.txt"
    listing.write_text(f"{prepare.sha256_file(image)}  annotation_images/0_random_140/000000000000.jpg\n")
    assert prepare.main(["pie_bench", "--root", str(root), "--checksums", str(listing)]) == 1
    assert "not in the checksum list: mapping_file.json" in capsys.readouterr().out


def test_prepare_reports_sample_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    root = write_tedbench(tmp_path / "ted", [*TED_PAIRS, {"img_name": "gone.png", "target_text": "x"}])
    monkeypatch.setitem(prepare.BENCHMARKS["tedbench"].counts, "test", 4)
    assert prepare.main(["tedbench", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "input_list.json, entry 3: image file not found" in out and not (root / prepare.MANIFEST).exists()


def _fake_github(files: dict[str, bytes], tamper: str | None = None) -> Callable[[str], bytes]:
    tree = {"tree": [{"path": p, "type": "blob", "sha": prepare.git_blob_sha1(d)} for p, d in files.items()]}

    def fake(url: str) -> bytes:
        if "api.github.com" in url:
            return json.dumps(tree).encode()
        path = next(p for p in files if url.endswith(p.replace(" ", "%20")))
        return files[path] + (b"!" if path == tamper else b"")

    return fake


def test_prepare_fetches_from_github_with_blob_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    src = write_tedbench(tmp_path / "src")
    files = {f"tedbench/{p.relative_to(src).as_posix()}": p.read_bytes() for p in src.rglob("*") if p.is_file()}
    files["tedbench/imagic/zebra.jpeg-A_photo_of_a_horse.png"] = b"imagic output, not part of the benchmark"
    monkeypatch.setattr(prepare, "_urlopen", _fake_github(files))
    monkeypatch.setitem(prepare.BENCHMARKS["tedbench"].counts, "test", 3)
    root = tmp_path / "ted"
    assert prepare.main(["tedbench", "--root", str(root)]) == 0
    assert (root / "originals" / "zebra.jpeg").is_file() and not (root / "imagic").exists()
    assert "checksums against" in capsys.readouterr().out
    monkeypatch.setattr(prepare, "_urlopen", _fake_github(files, tamper="tedbench/originals/zebra.jpeg"))
    assert prepare.main(["tedbench", "--root", str(tmp_path / "ted2")]) == 2
    assert "checksum mismatch for tedbench/originals/zebra.jpeg" in capsys.readouterr().out

    def offline(url: str) -> bytes:
        raise OSError("network is unreachable")

    monkeypatch.setattr(prepare, "_urlopen", offline)
    assert prepare.main(["editeval", "--root", str(tmp_path / "ee")]) == 2
    out = capsys.readouterr().out
    assert "could not download" in out and f"{tmp_path / 'ee'}/editing_prompts_collection.xlsx" in out


# --------------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(FIXTURE_WRITERS))
def test_benchmark_dataset_configs(name: str, tmp_path: Path) -> None:
    from conftest import compose_cfg
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    root = FIXTURE_WRITERS[name](tmp_path / name)
    cfg = compose_cfg([f"dataset={name}", f"dataset.root={root}", "dataset.limit=2"])
    assert cfg.dataset.name == name
    node = OmegaConf.to_container(cfg.dataset, resolve=True)
    dataset = instantiate({k: v for k, v in node.items() if k != "name"})  # as the runner's build() does
    assert dataset.name == name and len(dataset.ids()) == 2
    assert dataset.load(dataset.ids()[0]).source_image.size[0] > 0
