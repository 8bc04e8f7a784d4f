"""The world tokenizer: a stock CLIPTokenizer in which each vocabulary word is one token."""

from __future__ import annotations

from pathlib import Path

from editlab.datasets.shapesworld import vocabulary
from editlab.models.tokenizer import build_clip_tokenizer


def test_every_vocabulary_word_is_one_token(tmp_path: Path) -> None:
    words = vocabulary()
    tok = build_clip_tokenizer(words, tmp_path)
    for word in words:
        ids = tok(word, add_special_tokens=False).input_ids
        assert len(ids) == 1, (word, tok.convert_ids_to_tokens(ids))
    # words sharing prefixes and suffixes, the case a per-word merge chain gets wrong
    tricky = ["triangle", "tri", "angle", "purple", "pur", "ple", "circle"]
    tok2 = build_clip_tokenizer(tricky, tmp_path / "t")
    assert all(len(tok2(w, add_special_tokens=False).input_ids) == 1 for w in tricky)
    # unknown text still tokenizes (character by character), never to the end token
    ids = tok("zebra", add_special_tokens=False).input_ids
    assert len(ids) > 1 and tok.eos_token_id not in ids
