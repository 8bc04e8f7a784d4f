"""``editlab data prepare <name>``: fetch a benchmark when it can be fetched, else say what to place where;
then verify it (sample and file counts, every referenced file present and readable as an index row, and
checksums).

Sources: EditEval v1 and TEdBench are files in public GitHub repositories (downloaded one by one and checked
against the git blob hashes GitHub reports); MagicBrush train/dev and the ImagenHub sets are parquet files on
the Hugging Face hub (checked against the hub's SHA-256). PIE-Bench (request form) and the MagicBrush test
split (password-protected zip) cannot be fetched automatically: the command prints where to get them and
exactly where to put the files.

Checksums: after a download, or after the first clean verification of files placed by hand, the SHA-256 of
every data file is recorded in ``<root>/editlab_manifest.json``; later runs compare against it, so a changed,
truncated or missing file is reported. ``--checksums FILE`` checks against a ``sha256sum``-style list instead.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from editlab.datasets.folder import IMAGE_SUFFIXES, DatasetFormatError

MANIFEST = "editlab_manifest.json"
TIMEOUT_S = 60


class FetchError(RuntimeError):
    """A download that failed or did not match its published checksum."""


# --------------------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def git_blob_sha1(data: bytes) -> str:
    """The hash git (and GitHub's tree API) gives a file with content ``data``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def read_manifest(root: Path, split: str) -> dict[str, str]:
    """Recorded SHA-256 of the data files of ``split`` under ``root`` ({relative path: hex})."""
    path = root / MANIFEST
    if not path.is_file():
        return {}
    return dict(json.loads(path.read_text(encoding="utf-8")).get("splits", {}).get(split, {}).get("files", {}))


def write_manifest(root: Path, split: str, files: list[Path], note: str) -> dict[str, str]:
    """Record the SHA-256 of ``files`` as the data of ``split`` (other splits' records are kept)."""
    path = root / MANIFEST
    payload = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"algorithm": "sha256"}
    digests = {p.relative_to(root).as_posix(): sha256_file(p) for p in files}
    payload.setdefault("splits", {})[split] = {"note": note, "files": dict(sorted(digests.items()))}
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    return digests


def read_checksum_list(path: Path) -> dict[str, str]:
    """``sha256sum`` output (``<hex>  <path>`` or ``<hex> *<path>``) as {path: hex}."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, _, name = line.strip().partition(" ")
            out[name.strip().lstrip("*")] = digest.lower()
    return out


def compare_checksums(root: Path, expected: dict[str, str], files: list[Path]) -> list[str]:
    """Problems (missing, changed, unrecorded files) comparing ``files`` under ``root`` with ``expected``."""
    problems = []
    present = {p.relative_to(root).as_posix(): p for p in files}
    for rel, digest in sorted(expected.items()):
        if rel not in present:
            if not (root / rel).is_file():
                problems.append(f"missing: {rel}")
                continue
            present[rel] = root / rel
        if sha256_file(present[rel]) != digest:
            problems.append(f"checksum mismatch: {rel}")
    problems += [f"not in the checksum list: {rel}" for rel in sorted(set(present) - set(expected))]
    return problems


# --------------------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------------------
def _urlopen(url: str) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "editlab-data-prepare"})
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310 (https URLs only)
        return response.read()


def fetch_github(owner: str, repo: str, prefix: str, dest: Path, keep: Callable[[str], bool] = lambda _: True,
                 ref: str = "HEAD") -> list[Path]:
    """Download the files under ``prefix`` of a public GitHub repository into ``dest`` (paths relative to
    ``prefix``), each checked against the git blob hash of the repository tree."""
    try:
        tree = json.loads(_urlopen(f"https://api.github.com/repos/{owner}/{repo}/git/trees/{ref}?recursive=1"))
    except Exception as err:  # network, HTTP or JSON errors all mean "cannot fetch"
        raise FetchError(f"could not list github.com/{owner}/{repo}: {type(err).__name__}: {err}") from err
    blobs = {e["path"]: e["sha"] for e in tree.get("tree", []) if e.get("type") == "blob"
             and e["path"].startswith(prefix + "/") and keep(e["path"][len(prefix) + 1:])}
    if not blobs:
        raise FetchError(f"github.com/{owner}/{repo} has no files under {prefix}/")
    written = []
    for path, sha in sorted(blobs.items()):
        url = f"https://raw.githubusercontent.com/{owner}/{repo}/{ref}/{urllib.parse.quote(path)}"
        try:
            data = _urlopen(url)
        except Exception as err:
            raise FetchError(f"could not download {url}: {type(err).__name__}: {err}") from err
        if git_blob_sha1(data) != sha:
            raise FetchError(f"checksum mismatch for {path}: git blob {git_blob_sha1(data)}, tree says {sha}")
        target = dest / path[len(prefix) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written.append(target)
    write_manifest(dest, "test", written,
                   f"downloaded from github.com/{owner}/{repo}/{prefix}, verified against git blob hashes")
    return written


def _is_split_file(path: str, split: str) -> bool:
    p = PurePosixPath(path)
    return p.suffix == ".parquet" and (p.name.startswith(f"{split}-") or p.stem == split or p.parent.name == split)


def fetch_hf_parquet(repo_id: str, root: Path, split: str) -> list[Path]:
    """Download the parquet files of one split of a hub dataset into ``root`` (hub layout kept), each checked
    against the SHA-256 the hub records; falls back to the hub's automatic parquet conversion."""
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError as err:
        raise FetchError("downloading from the Hugging Face hub needs huggingface_hub: pip install huggingface_hub") \
            from err
    api = HfApi()
    files: list[Any] = []
    revision = None
    errors = []
    for revision in (None, "refs/convert/parquet"):
        try:
            tree = api.list_repo_tree(repo_id, repo_type="dataset", recursive=True, expand=True, revision=revision)
            files = [f for f in tree if hasattr(f, "lfs") and _is_split_file(f.path, split)]
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")
            continue
        if files:
            break
    if not files:
        detail = f" ({'; '.join(errors)})" if errors else ""
        raise FetchError(f"no parquet files for split '{split}' of {repo_id} on the hub{detail}")
    root.mkdir(parents=True, exist_ok=True)
    written = []
    for f in files:
        try:
            local = Path(hf_hub_download(repo_id, f.path, repo_type="dataset", revision=revision,
                                         local_dir=str(root)))
        except Exception as err:
            raise FetchError(f"could not download {f.path} from {repo_id}: {type(err).__name__}: {err}") from err
        lfs = f.lfs
        expected = getattr(lfs, "sha256", None) or (lfs.get("sha256") if isinstance(lfs, dict) else None)
        if expected and sha256_file(local) != expected:
            raise FetchError(f"checksum mismatch for {f.path} from {repo_id}")
        written.append(local)
    write_manifest(root, split, written,
                   f"downloaded from the Hugging Face hub ({repo_id}), verified against the hub's SHA-256")
    return written


def fetch_hf_files(repo_id: str, root: Path, keep: Callable[[str], bool]) -> list[Path]:
    """Download the files of a hub dataset for which ``keep(path)`` holds into ``root`` (hub layout kept), each
    LFS file checked against the SHA-256 the hub records; archives (``.tar``, ``.zip``) are unpacked in place."""
    try:
        from huggingface_hub import HfApi, hf_hub_download
    except ImportError as err:
        raise FetchError("downloading from the Hugging Face hub needs huggingface_hub: pip install huggingface_hub") \
            from err
    try:
        tree = [f for f in HfApi().list_repo_tree(repo_id, repo_type="dataset", recursive=True, expand=True)
                if hasattr(f, "size") and keep(f.path)]
    except Exception as err:
        raise FetchError(f"could not list {repo_id} on the hub: {type(err).__name__}: {err}") from err
    if not tree:
        raise FetchError(f"{repo_id} on the hub has none of the files expected")
    written: list[Path] = []
    for f in tree:
        try:
            local = Path(hf_hub_download(repo_id, f.path, repo_type="dataset", local_dir=str(root)))
        except Exception as err:
            raise FetchError(f"could not download {f.path} from {repo_id}: {type(err).__name__}: {err}") from err
        expected = getattr(getattr(f, "lfs", None), "sha256", None)
        if expected and sha256_file(local) != expected:
            raise FetchError(f"checksum mismatch for {f.path} from {repo_id}")
        written += unpack(local, root) if local.suffix in (".tar", ".zip") else [local]
    return written


def unpack(archive: Path, dest: Path) -> list[Path]:
    """Extract a ``.tar`` or ``.zip`` archive into ``dest`` (members may not leave it); the extracted files."""
    import tarfile
    import zipfile

    dest = dest.resolve()
    if archive.suffix == ".zip":
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            if any(not (dest / n).resolve().is_relative_to(dest) for n in names):
                raise FetchError(f"{archive} has members outside the folder it unpacks into")
            z.extractall(dest)
    else:
        with tarfile.open(archive) as t:
            names = [m.name for m in t.getmembers() if m.isfile()]
            t.extractall(dest, filter="data")
    archive.unlink()
    return [dest / n for n in names]


def fetch_imgedit(root: Path, suite: str) -> list[Path]:
    """ImgEdit-Bench: the edit json of ``suite`` from github.com/PKU-YuanGroup/ImgEdit (git blob hashes) and the
    images of ``Benchmark.tar`` from the hub dataset sysuyy/ImgEdit (SHA-256)."""
    wanted = {"basic": "Basic/basic_edit.json", "uge": "UGE/UGE_edit.json"}[suite]
    files = fetch_github("PKU-YuanGroup", "ImgEdit", "Benchmark", root, keep=lambda rel: rel == wanted)
    if not any((root / "Benchmark" / d).is_dir() for d in ("singleturn", "hard", "Basic", "UGE")):
        files += fetch_hf_files("sysuyy/ImgEdit", root, keep=lambda path: path == "Benchmark.tar")
    write_manifest(root, "test", _files(root / wanted, *_imgedit_images(root, suite)),
                   "downloaded from github.com/PKU-YuanGroup/ImgEdit and the hub (sysuyy/ImgEdit), verified")
    return files


def _imgedit_images(root: Path, suite: str) -> list[Path]:
    from editlab.datasets.imgedit import _IMAGES

    return [folder for folder in (root / c for c in _IMAGES[suite]) if folder.is_dir()][:1]


def fetch_rise(root: Path, split: str) -> list[Path]:
    """RISEBench-360 from the hub dataset PhoenixZ/RISEBench (SHA-256), RISEBench-64 from the ``data`` folder of
    github.com/PhoenixZ810/RISEBench (git blob hashes)."""
    if split == "mini":
        return fetch_github("PhoenixZ810", "RISEBench", "data", root)
    files = fetch_hf_files("PhoenixZ/RISEBench", root,
                           keep=lambda path: path in ("datav2_total_w_subtask.json", "data.zip"))
    write_manifest(root, split, files, "downloaded from the hub (PhoenixZ/RISEBench), verified against its SHA-256")
    return files


def fetch_kris(root: Path, split: str) -> list[Path]:
    """KRIS-Bench from the hub dataset Liang0223/KRIS_Bench (SHA-256 of LFS files)."""
    files = fetch_hf_files("Liang0223/KRIS_Bench", root, keep=lambda path: path.startswith("KRIS_Bench/"))
    write_manifest(root, split, files, "downloaded from the hub (Liang0223/KRIS_Bench), verified")
    return files


def _table_present(hub_split: Callable[[str], str]) -> Callable[[Path, str], bool]:
    from editlab.datasets.magicbrush import arrow_files

    return lambda root, split: _hf_present(root, hub_split(split)) or bool(arrow_files(root, hub_split(split)))


def _table_files(hub_split: Callable[[str], str]) -> Callable[[Path, str], list[Path]]:
    from editlab.datasets.magicbrush import arrow_files, parquet_files

    return lambda root, split: (parquet_files(root, hub_split(split)) or arrow_files(root, hub_split(split))
                                or _files(root / hub_split(split)))


def _kris_files(root: Path, split: str) -> list[Path]:
    from editlab.datasets.kris import kris_folder

    return _files(kris_folder(root))


def _kris_missing(dataset: Any) -> list[str]:
    return [f"category folder missing: {c}" for c in dataset.missing_categories]


def _rise_files(root: Path, split: str) -> list[Path]:
    from editlab.datasets.risebench import RISE_INDEX

    index = next((p for p in (root / RISE_INDEX[split], root / "data" / RISE_INDEX[split]) if p.is_file()), None)
    if index is None:
        return []
    folders = [d for d in index.parent.rglob("*_images") if d.is_dir()]
    return _files(index, *folders)


def _gedit_split(split: str) -> str:
    return "train"


def _emu_split(split: str) -> str:
    from editlab.datasets.emu_edit import SWAPPED

    return SWAPPED[split]


# --------------------------------------------------------------------------------------------------------
# Benchmarks
# --------------------------------------------------------------------------------------------------------
@dataclass
class Benchmark:
    """How to obtain, find and check one benchmark."""

    name: str
    title: str
    target: str                          # "module:Class" of the loader
    default_split: str
    counts: dict[str, int | None]        # expected samples per split (None: no published count)
    place: str                           # what to place where ({root} and {split} are filled in)
    present: Callable[[Path, str], bool]
    data_files: Callable[[Path, str], list[Path]]
    fetch: Callable[[Path, str], Any] | None = None
    fetchable_splits: tuple[str, ...] = ()
    image_counts: dict[str, int] = field(default_factory=dict)  # expected image files per split
    session_counts: dict[str, int] = field(default_factory=dict)  # expected multi-turn sessions per split
    loader_args: dict[str, Any] = field(default_factory=dict)  # extra arguments of the loader (e.g. a suite)
    check: Callable[[Any], list[str]] | None = None  # further problems of a loaded dataset (e.g. missing parts)

    def loader(self) -> Any:
        module, _, attr = self.target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        return (lambda **kw: cls(**self.loader_args, **kw)) if self.loader_args else cls


def _files(*paths: Path) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(q for q in p.rglob("*") if q.is_file() and q.name != MANIFEST)
    return out


def _images(files: list[Path]) -> list[Path]:
    return [p for p in files if p.suffix in IMAGE_SUFFIXES]


def _hf_present(root: Path, split: str) -> bool:
    from editlab.datasets.magicbrush import parquet_files

    return bool(parquet_files(root, split)) or (root / split / "metadata.jsonl").is_file() or \
        (root / "dataset_dict.json").is_file() or (root / split / "state.json").is_file()


def _hf_files(root: Path, split: str) -> list[Path]:
    from editlab.datasets.magicbrush import parquet_files

    return parquet_files(root, split) or _files(root / split)


def _magicbrush_present(root: Path, split: str) -> bool:
    return (root / split / "edit_sessions.json").is_file() or (root / "edit_sessions.json").is_file() \
        or _hf_present(root, split)


def _magicbrush_files(root: Path, split: str) -> list[Path]:
    if (root / split / "edit_sessions.json").is_file():
        return _files(root / split)
    if (root / "edit_sessions.json").is_file():
        return _files(root)
    return _hf_files(root, split)


def _hub_place(repo_id: str) -> str:
    return (f"Download {repo_id} split '{{split}}' when online (this command does it), or copy its parquet files "
            f"so that {{root}}/data/{{split}}-00000-of-0000N-<hash>.parquet exist (reading them needs pyarrow); a "
            f"datasets.save_to_disk folder at {{root}} works too (needs the datasets package).")


_EDITEVAL_FOLDERS = ("object_addition", "object_replacement", "object_removel", "background_change",
                     "style_change", "texture_change", "action_change")

BENCHMARKS: dict[str, Benchmark] = {
    "pie_bench": Benchmark(
        name="pie_bench", title="PIE-Bench (Ju et al. 2024)", target="editlab.datasets.pie_bench:PIEBenchDataset",
        default_split="test", counts={"test": 700}, image_counts={"test": 700},
        place=(
            "PIE-Bench is distributed by its authors through the request form linked from the PnPInversion "
            "repository (github.com/cure-lab/PnPInversion, 'Benchmark Download'). Unzip PIE-Bench_v1 so that\n"
            "  {root}/mapping_file.json\n"
            "  {root}/annotation_images/0_random_140/000000000000.jpg\n"
            "  ... 700 images in the 10 folders 0_random_140 ... 9_change_style_80"
        ),
        present=lambda root, split: (root / "mapping_file.json").is_file(),
        data_files=lambda root, split: _files(root / "mapping_file.json", root / "annotation_images"),
    ),
    "editeval": Benchmark(
        name="editeval", title="EditEval v1 (Huang et al. 2024)", target="editlab.datasets.editeval:EditEvalDataset",
        default_split="test", counts={"test": 50}, image_counts={"test": 50},
        place=(
            "EditEval v1 is the folder EditEval_v1/Dataset of github.com/SiatMMLab/"
            "Awesome-Diffusion-Model-Based-Image-Editing-Methods (this command downloads it when online). "
            "Place it so that\n"
            "  {root}/editing_prompts_collection.xlsx\n"
            "  {root}/object_addition/1.jpg  {root}/object_replacement/  {root}/object_removel/  "
            "{root}/background_change/\n"
            "  {root}/style_change/  {root}/texture_change/  {root}/action_change/   (50 images in all)"
        ),
        present=lambda root, split: (root / "editing_prompts_collection.xlsx").is_file(),
        data_files=lambda root, split: _files(root / "editing_prompts_collection.xlsx",
                                              *(root / f for f in _EDITEVAL_FOLDERS)),
        fetch=lambda root, split: fetch_github(
            "SiatMMLab", "Awesome-Diffusion-Model-Based-Image-Editing-Methods", "EditEval_v1/Dataset", root),
        fetchable_splits=("test",),
    ),
    "magicbrush": Benchmark(
        name="magicbrush", title="MagicBrush (Zhang et al. 2023)",
        target="editlab.datasets.magicbrush:MagicBrushDataset",
        default_split="test", counts={"test": 1053, "dev": 528, "train": 8807},
        session_counts={"test": 535, "dev": 266, "train": 4512},
        place=(
            "test split: download the test zip linked from github.com/OSU-NLP-Group/MagicBrush (its README gives "
            "the password) and unzip it so that\n"
            "  {root}/test/edit_sessions.json\n"
            "  {root}/test/images/<img_id>/<img_id>-input.png, <img_id>-mask1.png, <img_id>-output1.png, ...\n"
            "  {root}/test/global_descriptions.json, local_descriptions.json (optional: captions)\n"
            "train and dev splits: " + _hub_place("osunlp/MagicBrush")
        ),
        present=_magicbrush_present,
        data_files=_magicbrush_files,
        fetch=lambda root, split: fetch_hf_parquet("osunlp/MagicBrush", root, split),
        fetchable_splits=("train", "dev"),
    ),
    "imagenhub_text": Benchmark(
        name="imagenhub_text", title="ImagenHub text-guided image editing",
        target="editlab.datasets.imagenhub:ImagenHubTextDataset",
        default_split="filtered", counts={"filtered": 179, "extra": 249, "dev": 528},
        place=_hub_place("ImagenHub/Text_Guided_Image_Editing"),
        present=_hf_present, data_files=_hf_files,
        fetch=lambda root, split: fetch_hf_parquet("ImagenHub/Text_Guided_Image_Editing", root, split),
        fetchable_splits=("filtered", "extra", "dev"),
    ),
    "imagenhub_mask": Benchmark(
        name="imagenhub_mask", title="ImagenHub mask-guided image editing",
        target="editlab.datasets.imagenhub:ImagenHubMaskDataset",
        default_split="filtered", counts={"filtered": 179, "extra": 249, "dev": 528},
        place=_hub_place("ImagenHub/Mask_Guided_Image_Editing"),
        present=_hf_present, data_files=_hf_files,
        fetch=lambda root, split: fetch_hf_parquet("ImagenHub/Mask_Guided_Image_Editing", root, split),
        fetchable_splits=("filtered", "extra", "dev"),
    ),
    "tedbench": Benchmark(
        name="tedbench", title="TEdBench (Kawar et al. 2023, Imagic)",
        target="editlab.datasets.tedbench:TEdBenchDataset",
        default_split="test", counts={"test": 100},
        place=(
            "TEdBench is the folder tedbench of github.com/imagic-editing/imagic-editing.github.io (this command "
            "downloads it when online). Place it so that\n"
            "  {root}/input_list.json\n"
            "  {root}/originals/<img_name>   (every img_name of input_list.json)"
        ),
        present=lambda root, split: (root / "input_list.json").is_file(),
        data_files=lambda root, split: _files(root / "input_list.json", root / "originals"),
        fetch=lambda root, split: fetch_github(
            "imagic-editing", "imagic-editing.github.io", "tedbench", root,
            keep=lambda rel: rel == "input_list.json" or rel.startswith("originals/")),
        fetchable_splits=("test",),
    ),
}

_IMGEDIT_PLACE = (
    "ImgEdit-Bench: the edit json files are in github.com/PKU-YuanGroup/ImgEdit (Benchmark/Basic/basic_edit.json, "
    "Benchmark/UGE/UGE_edit.json) and the images in Benchmark.tar of the hub dataset sysuyy/ImgEdit (this command "
    "downloads both when online). Place them so that\n"
    "  {root}/Basic/basic_edit.json   (or {root}/basic_edit.json)\n"
    "  {root}/UGE/UGE_edit.json       (or {root}/UGE_edit.json)\n"
    "  {root}/Benchmark/singleturn/<category>/<file>.jpg   (Basic images, the 'id' paths of basic_edit.json)\n"
    "  {root}/Benchmark/hard/<file>.jpg                    (UGE images)"
)

BENCHMARKS.update({
    "gedit": Benchmark(
        name="gedit", title="GEdit-Bench (Step1X-Edit, Liu et al. 2025)",
        target="editlab.datasets.gedit:GEditBenchDataset",
        default_split="test", counts={"test": 606},  # per language: 606 English, 606 Chinese rows
        place=_hub_place("stepfun-ai/GEdit-Bench").replace("{split}", "train")
        + " The hub's only split is 'train' (editlab: test); arrow files train/*.arrow are read too.",
        present=_table_present(_gedit_split), data_files=_table_files(_gedit_split),
        fetch=lambda root, split: fetch_hf_parquet("stepfun-ai/GEdit-Bench", root, "train"),
        fetchable_splits=("test",),
    ),
    "imgedit": Benchmark(
        name="imgedit", title="ImgEdit-Bench Basic (Ye et al. 2025)",
        target="editlab.datasets.imgedit:ImgEditDataset", default_split="test",
        counts={"test": 737}, image_counts={"test": 737}, place=_IMGEDIT_PLACE,
        present=lambda root, split: _imgedit_present(root, "basic"),
        data_files=lambda root, split: _imgedit_files(root, "basic"),
        fetch=lambda root, split: fetch_imgedit(root, "basic"), fetchable_splits=("test",),
        loader_args={"suite": "basic"},
    ),
    "imgedit_uge": Benchmark(
        name="imgedit_uge", title="ImgEdit-Bench UGE (Ye et al. 2025)",
        target="editlab.datasets.imgedit:ImgEditDataset", default_split="test",
        counts={"test": 47}, place=_IMGEDIT_PLACE,
        present=lambda root, split: _imgedit_present(root, "uge"),
        data_files=lambda root, split: _imgedit_files(root, "uge"),
        fetch=lambda root, split: fetch_imgedit(root, "uge"), fetchable_splits=("test",),
        loader_args={"suite": "uge"},
    ),
    "kris": Benchmark(
        name="kris", title="KRIS-Bench (Wu et al. 2025)", target="editlab.datasets.kris:KRISBenchDataset",
        default_split="test", counts={"test": None},  # the paper's total is not checkable against the release
        place=(
            "KRIS-Bench is the KRIS_Bench folder of the hub dataset Liang0223/KRIS_Bench (this command downloads it "
            "when online). Place it so that\n"
            "  {root}/KRIS_Bench/<category>/annotation.json and its images, for the 20 categories "
            "(count_change, color_change, ..., viewpoint_change)"
        ),
        present=lambda root, split: any(_kris_files(root, split)), data_files=_kris_files,
        fetch=fetch_kris, fetchable_splits=("test",), check=_kris_missing,
    ),
    "rise": Benchmark(
        name="rise", title="RISEBench (Zhao et al. 2025)", target="editlab.datasets.risebench:RISEBenchDataset",
        default_split="test", counts={"test": 360, "mini": 64},
        place=(
            "RISEBench-360 (split test) is datav2_total_w_subtask.json + data.zip of the hub dataset "
            "PhoenixZ/RISEBench; RISEBench-64 (split mini) the data folder of github.com/PhoenixZ810/RISEBench "
            "(this command downloads either when online). Place them so that\n"
            "  {root}/datav2_total_w_subtask.json (or data_total.json for mini)\n"
            "  {root}/temporal_reasoning_images/1.png ...  (the 'image' paths of the json, relative to its folder)"
        ),
        present=lambda root, split: bool(_rise_files(root, split)), data_files=_rise_files,
        fetch=fetch_rise, fetchable_splits=("test", "mini"),
    ),
    "emu_edit": Benchmark(
        name="emu_edit", title="Emu Edit test set (Sheynin et al. 2024)",
        target="editlab.datasets.emu_edit:EmuEditDataset",
        default_split="test", counts={"test": 2022, "validation": 3589},
        place=(
            "The Emu Edit test set is the hub dataset facebook/emu_edit_test_set (this command downloads it when "
            "online). Its split names are swapped: editlab's test is the hub's validation files (2,022 rows), "
            "editlab's validation the hub's test files (3,589 rows). Copy the parquet files so that\n"
            "  {root}/data/validation-0000N-of-00002-<hash>.parquet   (editlab split test)\n"
            "  {root}/data/test-0000N-of-00003-<hash>.parquet         (editlab split validation)\n"
            "(reading them needs pyarrow)"
        ),
        present=_table_present(_emu_split), data_files=_table_files(_emu_split),
        fetch=lambda root, split: fetch_hf_parquet("facebook/emu_edit_test_set", root, _emu_split(split)),
        fetchable_splits=("test", "validation"),
    ),
})


def _imgedit_present(root: Path, suite: str) -> bool:
    from editlab.datasets.imgedit import _INDEX

    return any((root / c).is_file() for c in _INDEX[suite])


def _imgedit_files(root: Path, suite: str) -> list[Path]:
    from editlab.datasets.imgedit import _INDEX

    index = next((root / c for c in _INDEX[suite] if (root / c).is_file()), None)
    return _files(*([index] if index else []), *_imgedit_images(root, suite))


# --------------------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------------------
def verify(name: str, root: Path, split: str, checksums: Path | None = None, record: bool = True,
           out: Any = None) -> int:
    """Check one prepared benchmark; prints a report, returns 0 when everything matches, else 1."""
    out = out or sys.stdout
    bench = BENCHMARKS[name]
    problems: list[str] = []
    try:
        dataset = bench.loader()(root=str(root), split=split, on_error="skip")
    except (FileNotFoundError, DatasetFormatError, ImportError, ValueError) as err:
        print(f"[{name}] cannot read {root}: {err}", file=out)
        return 1
    n = len(dataset.ids())
    expected = bench.counts.get(split)
    print(f"[{name}] {root} split '{split}': {n} samples" + (f" (expected {expected})" if expected else ""),
          file=out)
    if expected is not None and n != expected:
        problems.append(f"{n} samples, expected {expected}")
    expected_sessions = bench.session_counts.get(split)
    if expected_sessions is not None and hasattr(dataset, "sessions"):
        n_sessions = len(dataset.sessions())
        print(f"[{name}] {n_sessions} sessions (expected {expected_sessions})", file=out)
        if n_sessions != expected_sessions:
            problems.append(f"{n_sessions} sessions, expected {expected_sessions}")
    if bench.check is not None:
        problems += bench.check(dataset)
    issues = dataset.issues.by_id
    for message in list(issues.values())[:20]:
        problems.append(message)
    if len(issues) > 20:
        problems.append(f"... and {len(issues) - 20} more sample problems")
    files = bench.data_files(root, split)
    n_images = len(_images(files))
    expected_images = bench.image_counts.get(split)
    if expected_images is not None:
        print(f"[{name}] {n_images} image files (expected {expected_images})", file=out)
        if n_images != expected_images:
            problems.append(f"{n_images} image files, expected {expected_images}")
    if checksums is not None:
        diffs = compare_checksums(root, read_checksum_list(checksums), files)
        print(f"[{name}] checksums against {checksums}: {'ok' if not diffs else f'{len(diffs)} problem(s)'}",
              file=out)
        problems += diffs
    else:
        recorded = read_manifest(root, split)
        if recorded:
            diffs = compare_checksums(root, recorded, files)
            print(f"[{name}] checksums against {root / MANIFEST}: "
                  f"{'ok' if not diffs else f'{len(diffs)} problem(s)'}", file=out)
            problems += diffs
        elif record and not problems:
            write_manifest(root, split, files, "recorded by editlab data prepare after a clean verification")
            print(f"[{name}] recorded SHA-256 of {len(files)} files in {root / MANIFEST}", file=out)
    if problems:
        print(f"[{name}] {len(problems)} problem(s):", file=out)
        for p in problems:
            print(f"  - {p}", file=out)
        return 1
    print(f"[{name}] ok", file=out)
    return 0


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes") for v in ("HF_HUB_OFFLINE", "EDITLAB_OFFLINE"))


def instructions(name: str, root: Path, split: str) -> str:
    bench = BENCHMARKS[name]
    return f"{bench.title}, split '{split}':\n" + bench.place.format(root=root, split=split)


def main(argv: list[str] | None = None) -> int:
    """``editlab data prepare <name> [--root DIR] [--split S] [--offline] [--checksums FILE]``; returns the exit
    status: 0 ready and verified, 1 present but with problems, 2 missing (instructions printed).
    ``judge/<protocol>`` prepares a judge protocol's prompt file instead (:func:`prepare_protocol`)."""
    from editlab.metrics.judge.sources import SOURCES as PROTOCOLS

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="editlab data prepare",
                                     description="Fetch (when possible) and verify a benchmark dataset.")
    if argv and argv[0].startswith("judge/") and argv[0].removeprefix("judge/") in PROTOCOLS:
        return prepare_protocol([argv[0].removeprefix("judge/"), *argv[1:]])
    protocols = [f"judge/{p}" for p in sorted(PROTOCOLS)]
    parser.add_argument("name", choices=sorted(BENCHMARKS) + protocols,
                        help="benchmark (or a judge protocol's prompt file: " + ", ".join(protocols) + ") to prepare")
    parser.add_argument("--root", help="data folder (default: data/<name>, the dataset config's default root)")
    parser.add_argument("--split", help="split to prepare (default: the benchmark's evaluation split)")
    parser.add_argument("--offline", action="store_true",
                        help="never download; print what to place where (also when HF_HUB_OFFLINE=1)")
    parser.add_argument("--checksums", type=Path, help="verify against this sha256sum-style list")
    parser.add_argument("--no-record", action="store_true",
                        help="do not record checksums after a clean verification of hand-placed files")
    args = parser.parse_args(argv)
    bench = BENCHMARKS[args.name]
    root = Path(args.root or f"data/{args.name}")
    split = args.split or bench.default_split
    if split not in bench.counts:
        parser.error(f"unknown split {split!r} for {args.name}; valid: {', '.join(bench.counts)}")
    if not bench.present(root, split):
        can_fetch = bench.fetch is not None and split in bench.fetchable_splits
        if can_fetch and not (args.offline or _offline()):
            print(f"[{args.name}] downloading split '{split}' to {root} ...")
            try:
                bench.fetch(root, split)
            except FetchError as err:
                print(f"[{args.name}] could not download: {err}\n")
                print(instructions(args.name, root, split))
                return 2
        else:
            why = "offline" if can_fetch else "this split cannot be downloaded automatically"
            print(f"[{args.name}] not found at {root} ({why}).\n")
            print(instructions(args.name, root, split))
            return 2
    return verify(args.name, root, split, checksums=args.checksums, record=not args.no_record)


def prepare_protocol(argv: list[str]) -> int:
    """``editlab data prepare judge/<protocol> [--root DIR] [--offline] [--sha256 HEX]``: a judge protocol's prompt file
    (:mod:`editlab.metrics.judge.sources`)."""
    from editlab.metrics.judge.sources import SOURCES, prepare

    parser = argparse.ArgumentParser(prog="editlab data prepare",
                                     description="Fetch (when online) and verify a judge protocol's prompt file.")
    parser.add_argument("name", choices=sorted(SOURCES), help="judge protocol")
    parser.add_argument("--root", default="data/judge", help="protocols folder (default data/judge)")
    parser.add_argument("--offline", action="store_true", help="never download; print what to place where")
    parser.add_argument("--sha256", default=None, help="the SHA-256 the file must have (pins an unpinned source)")
    args = parser.parse_args(argv)
    return prepare(args.name, Path(args.root), offline=args.offline, sha256=args.sha256)


if __name__ == "__main__":
    raise SystemExit(main())
