"""Build a CLIP BPE tokenizer in which each word of a closed vocabulary is one token.

CLIP's tokenizer is a byte-pair encoder: a word is split into characters (the last one carrying the
``</w>`` end-of-word marker) and merged pairwise in the order of the ranked merge list. editlab learns that
merge list on the vocabulary itself, greedily merging the most frequent pair until every word is a single
symbol; encoding a word then replays exactly those merges, so each vocabulary word becomes one token.
(Writing one merge chain per word instead is wrong: another word's higher-ranked merge can pre-empt a chain
and leave the word split.) Every single character is in the vocabulary too, so any other text still
tokenizes, character by character. The result is a stock ``CLIPTokenizer`` saved in its usual files.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from pathlib import Path

from transformers import CLIPTokenizer

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_CHARS = string.ascii_lowercase + string.digits + "!\"#$%&'()*+,-./:;=?@[]_~"


def learn_word_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    """BPE merges learnt on ``words`` until every word is a single symbol (ties broken alphabetically)."""
    segs = {w: [*w[:-1], w[-1] + "</w>"] for w in sorted({w.lower() for w in words if w})}
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for seq in segs.values():
            for pair in zip(seq, seq[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda pr: (-counts[pr], pr))
        merges.append(best)
        for w, seq in segs.items():
            out, i = [], 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            segs[w] = out


def build_clip_tokenizer(words: Iterable[str], out_dir: str | Path, model_max_length: int = 77) -> CLIPTokenizer:
    """A stock ``CLIPTokenizer`` (saved to ``out_dir``) in which each of ``words`` is one token."""
    merges = learn_word_merges(words)
    vocab: dict[str, int] = {}
    for token in [*_CHARS, *(c + "</w>" for c in _CHARS), *(a + b for a, b in merges), BOS, EOS]:
        vocab.setdefault(token, len(vocab))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)
    tok.save_pretrained(out)
    return CLIPTokenizer.from_pretrained(out)
