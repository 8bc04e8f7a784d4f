"""The dataset interface: an ordered list of sample ids and a lazy ``load``.

Datasets never decode an image until ``load`` is called, so a resumed run that finds every output
cached decodes nothing, and one unreadable file fails one sample, not the run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator

from editlab.types import Sample, TaskType


class EditDataset(ABC):
    """A collection of editing samples.

    Subclasses implement :meth:`_index` (every sample id with its task type, cheap, no decoding) and
    :meth:`load` (decode one sample; raise :class:`editlab.types.SampleError` with a specific message
    when its files are unusable). ``split``, ``task_types`` and ``limit`` filter the index.
    """

    name: str = "dataset"

    def __init__(
        self,
        split: str = "test",
        task_types: Iterable[str | TaskType] | None = None,
        limit: int | None = None,
    ) -> None:
        self.split = split
        self.task_types = None if task_types is None else {TaskType(t) for t in task_types}
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")
        self.limit = limit

    @abstractmethod
    def _index(self) -> list[tuple[str, TaskType | None]]:
        """All (sample id, task type) pairs of the split, in a fixed order."""

    @abstractmethod
    def load(self, sample_id: str) -> Sample:
        """Decode one sample."""

    def source_key(self, sample_id: str) -> str:
        """Identity of the sample's source image (several edits may share one source); used to shard work so
        that a source's cached inversion stays on one worker. Defaults to the sample id."""
        return sample_id

    def chain_from(self, sample_id: str) -> str | None:
        """The id of the sample whose *edited output* is this sample's source image (multi-turn editing: turn k
        edits the method's own output of turn k-1), or None to edit the sample's own ``source_image``.

        Cheap and decoding nothing, like :meth:`_index`: the runner asks it before loading and for cached
        records. The named sample must come earlier in :meth:`ids` and share this sample's :meth:`source_key`
        (so that it is edited first, on the same worker). See :func:`editlab.bench.runner.edit_one`.
        """
        return None

    def scored(self, sample_id: str) -> bool:
        """Whether this sample's edit enters the metrics and counts. False for an edit the run needs only as the
        source of a later chained sample (e.g. the earlier turns of a final-turn evaluation): it is still edited
        and recorded (``"scored": false`` in its record), but not scored or aggregated."""
        return True

    def ids(self) -> list[str]:
        """Sample ids after the ``task_types`` and ``limit`` filters."""
        out = [i for i, t in self._index() if self.task_types is None or t in self.task_types]
        return out if self.limit is None else out[: self.limit]

    def __len__(self) -> int:
        return len(self.ids())

    def __iter__(self) -> Iterator[Sample]:
        for i in self.ids():
            yield self.load(i)
