"""Build a CLIP BPE tokenizer whose vocabulary covers a closed set of words.

CLIP's tokenizer is a byte-pair encoder: a word is split into characters and merged pairwise by the
ranked merge list, the last symbol carrying the ``</w>`` end-of-word marker. To make every word of a
closed vocabulary a single token we write, per word, the chain of merges that rebuilds it left to right,
plus every single character so unknown words still tokenize (character by character) instead of mapping
to ``<|endoftext|>``. The files are the standard ``vocab.json`` / ``merges.txt`` pair that
``CLIPTokenizer.from_pretrained`` reads.
"""

from __future__ import annotations

import json
import string
from collections.abc import Iterable
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_CHARS = string.ascii_lowercase + string.digits + "!\"#$%&'()*+,-./:;=?@[]_~"


def write_clip_vocab(words: Iterable[str], out_dir: str | Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` so that each of ``words`` is one token; returns ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab: dict[str, int] = {}

    def add(token: str) -> None:
        if token not in vocab:
            vocab[token] = len(vocab)

    for c in _CHARS:
        add(c)
    for c in _CHARS:
        add(c + "</w>")
    merges: list[str] = []
    seen: set[str] = set()
    for word in sorted({w.lower() for w in words if w}):
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        for c in symbols:
            add(c)
        left = symbols[0]
        for right in symbols[1:]:
            merge = f"{left} {right}"
            if merge not in seen:
                seen.add(merge)
                merges.append(merge)
            left = left + right
            add(left)
    add(BOS)
    add(EOS)
    (out / "vocab.json").write_text(json.dumps(vocab, indent=0))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return out


def build_clip_tokenizer(words: Iterable[str], out_dir: str | Path, model_max_length: int = 77) -> CLIPTokenizer:
    """Write the vocabulary files for ``words`` and load them as a stock ``CLIPTokenizer``."""
    path = write_clip_vocab(words, out_dir)
    vocab = json.loads((path / "vocab.json").read_text())
    merges = [tuple(line.split()) for line in (path / "merges.txt").read_text().splitlines()[1:] if line]
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    tok.save_pretrained(path)
    return CLIPTokenizer.from_pretrained(path)
