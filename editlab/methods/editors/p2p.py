"""Prompt-to-Prompt (Hertz et al., "Prompt-to-Prompt Image Editing with Cross-Attention Control", ICLR 2023).

The source and target branches are denoised side by side. During the first ``cross_replace_steps`` of the
steps the target's cross-attention maps are taken from the source branch, mapped token to token:

* ``refine`` (PIE-Bench always uses it): the two token sequences are aligned globally (Needleman-Wunsch with
  the official scores and tie-breaking, ``seq_aligner.global_align``); a target token aligned to a source token
  takes its map, a new token keeps its own;
* ``replace`` (prompts with the same number of words, some swapped): each target word's tokens receive the
  attention of the source word at the same position (split evenly when the two words have different token
  counts), as ``seq_aligner.get_replacement_mapper``; ``auto`` picks replace when the word counts match;
* reweighting: the target's maps of chosen words are scaled (on top of replace or refine).

During the first ``self_replace_steps`` the target's self-attention maps are replaced by the source's, in the
layers at most ``self_replace_max_resolution`` of the latent size. Local blending keeps the target equal to the
source outside the region the blend words attend to. As the official code, only the conditional half of
classifier-free guidance is controlled.

Defaults: PIE-Bench's settings of the official code (``cure-lab/PnPInversion`` ``run_editing_p2p.py``, whose
controllers are ``models/p2p/attention_control.py`` from ``google/prompt-to-prompt``): refine, cross 0.4,
self 0.6, self-attention replaced up to 32x32 of SD's 64x64 latents, local blending on the sample's blend words
(PIE's ``blended_word``: the source word in the source prompt, the target word in the target prompt; ShapesWorld
gives the edited object's noun the same way) with threshold 0.3 from step 0.2 on 16x16 maps after 3x3
max-pooling, and the target's blend words reweighted x2. A sample without blend words is edited without
blending or reweighting, as PIE does for an empty ``blended_word``.

Where editlab differs from the official code, and why:

* ``replace``: after the last replaced word the official mapper sends source token ``j`` to target token ``j``
  (``mapper[j, j] = 1``), which is off by the difference in token counts when a replaced word has a different
  number of tokens than its replacement; editlab continues from the source token that follows the word.
* Local blending uses maps of at least 8x8 cells (:meth:`LocalBlend.pick_level`): on SD the official 16x16
  maps; on a backbone with 8x8 latents the official 3x3 pooling of 2x2 maps would mark the whole frame.
* Blend words found in neither prompt are an error for that sample (the official mask is then empty and the
  output is the unedited source branch).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from editlab.methods.diffedit import mask_report, upsample_mask
from editlab.methods.editors.attention import AttentionControl, AttentionLayer, controlled_attention
from editlab.methods.editors.base import Editor
from editlab.methods.editors.loop import EditRequest, Step, denoise
from editlab.methods.presets import Preset
from editlab.types import SampleError

MODES = ("refine", "replace", "auto")
PIE_P2P = ("cure-lab/PnPInversion run_editing_p2p.py (guidance_scale=7.5, 50 DDIM steps; cross_replace_steps=0.4, "
           "self_replace_steps=0.6, is_replace_controller=False, blend_word, eq_params x2)")


# --------------------------------------------------------------------------------------------------------
# Words, tokens and alignment (google/prompt-to-prompt ptp_utils.get_word_inds, seq_aligner.py)
# --------------------------------------------------------------------------------------------------------
def word_token_positions(tokenizer, prompt: str) -> list[list[int]]:
    """Token positions (in the padded sequence; the start token is 0) of each word of ``prompt.split(" ")``.

    As ``get_word_inds``: the prompt is tokenised as a whole and each token's decoded text is counted against the
    current word's length (so punctuation stuck to a word belongs to it)."""
    words = prompt.split(" ")
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids[1:-1]
    positions: list[list[int]] = [[] for _ in words]
    ptr, length = 0, 0
    for i, token in enumerate(ids):
        if ptr >= len(words):
            break
        positions[ptr].append(i + 1)
        length += len(tokenizer.decode([token]).strip("#"))
        if length >= len(words[ptr]):
            ptr, length = ptr + 1, 0
    return positions


def word_indices(tokenizer, prompt: str, word: str) -> list[int]:
    """Token positions of every occurrence of ``word`` (an exact word of ``prompt.split(" ")``)."""
    return [p for w, pos in zip(prompt.split(" "), word_token_positions(tokenizer, prompt)) if w == word for p in pos]


def global_align(x: list[int], y: list[int]) -> list[int]:
    """For each token of ``y``, the index of the token of ``x`` it is aligned to, or -1 (a new token).

    Needleman-Wunsch global alignment with the scores of ``seq_aligner.py`` (gap 0, match 1, mismatch -1) and its
    tie-breaking (a gap in ``x`` before a gap in ``y`` before a diagonal), traced back from the end."""
    n, m = len(x), len(y)
    score = np.zeros((n + 1, m + 1), dtype=np.int64)
    trace = np.zeros((n + 1, m + 1), dtype=np.int8)  # 1: left (new y token), 2: up (x token dropped), 3: diagonal
    trace[0, 1:], trace[1:, 0] = 1, 2
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            left, up = score[i, j - 1], score[i - 1, j]
            diag = score[i - 1, j - 1] + (1 if x[i - 1] == y[j - 1] else -1)
            score[i, j] = max(left, up, diag)
            trace[i, j] = 1 if score[i, j] == left else 2 if score[i, j] == up else 3
    mapper = [-1] * m
    i, j = n, m
    while i > 0 or j > 0:
        move = trace[i, j]
        if move == 3:
            i, j = i - 1, j - 1
            mapper[j] = i
        elif move == 1:
            j -= 1
        else:
            i -= 1
    return mapper


def refine_mapper(tokenizer, source: str, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, alpha)`` of length L (``seq_aligner.get_mapper``): target token n takes source token ``index[n]``
    where ``alpha[n]`` is 1 (aligned tokens) and keeps its own map where 0 (new tokens); padding maps to itself."""
    length = tokenizer.model_max_length
    src = tokenizer(source, truncation=True, max_length=length).input_ids
    tgt = tokenizer(target, truncation=True, max_length=length).input_ids
    index, alpha = torch.arange(length), torch.ones(length)
    for n, k in enumerate(global_align(src, tgt)):
        if k < 0:
            alpha[n] = 0.0
        else:
            index[n] = k
    return index, alpha


def replace_mapper(tokenizer, source: str, target: str) -> torch.Tensor:
    """``(L, L)`` matrix M with target map[n] = sum_w source map[w] * M[w, n] (``get_replacement_mapper``), for
    prompts with the same number of words. Words that differ map token to token when their token counts match,
    else every source token spreads evenly over the target word's tokens; the rest follow in order."""
    length = tokenizer.model_max_length
    src_words, tgt_words = source.split(" "), target.split(" ")
    if len(src_words) != len(tgt_words):
        raise SampleError(f"P2P replace needs prompts with the same number of words, got {len(src_words)} and "
                          f"{len(tgt_words)}; use mode 'refine' or 'auto'")
    mapper = torch.zeros(length, length)
    s = t = 0
    for src, tgt, ws, wt in zip(word_token_positions(tokenizer, source), word_token_positions(tokenizer, target),
                                src_words, tgt_words):
        if src and ws != wt:
            s_idx, t_idx = torch.tensor(src)[:, None], torch.tensor(tgt)[None, :]
            if len(src) == len(tgt):
                mapper[src, tgt] = 1.0
            elif tgt:
                mapper[s_idx, t_idx] = 1.0 / len(tgt)
            # 1. Everything before the word follows in order, from the start token
            while s < src[0] and t < length:
                mapper[s, t] = 1.0
                s, t = s + 1, t + 1
            s, t = src[-1] + 1, (tgt[-1] + 1 if tgt else t)
    # 2. The rest (unchanged words, end token, padding) follows in order from where the last word ended
    while s < length and t < length:
        mapper[s, t] = 1.0
        s, t = s + 1, t + 1
    return mapper


def word_weights(tokenizer, prompt: str, words: dict[str, float], default: float = 0.0) -> torch.Tensor:
    """``(L,)`` per-token weight: ``words[w]`` on the tokens of every occurrence of the exact word ``w``."""
    out = torch.full((tokenizer.model_max_length,), float(default))
    for word, value in words.items():
        out[word_indices(tokenizer, prompt, word)] = float(value)
    return out


def differing_words(source: str, target: str) -> list[list[str]]:
    """Words of each prompt absent from the other (``blend_words="differing"``)."""
    src, tgt = source.split(" "), target.split(" ")
    return [[w for w in src if w not in tgt], [w for w in tgt if w not in src]]


# --------------------------------------------------------------------------------------------------------
# The attention control
# --------------------------------------------------------------------------------------------------------
class LocalBlend:
    """Keep the target equal to the source outside the words' attention (official ``LocalBlend``).

    Maps are summed over the layers of one resolution and over the steps so far, as the official
    ``AttentionStore``; the stored target maps are those the target used (after replacement and reweighting).
    """

    #: the 3x3 max-pooling dilates the region by one cell: on maps smaller than this it covers the whole frame
    MIN_SIDE = 8

    def __init__(self, alphas: torch.Tensor, downscale: int, threshold: float, start: float,
                 latent_side: int | None = None, total_steps: int | None = None) -> None:
        self.alphas = alphas  # (2, L): source words for the source branch, target words for the target
        self.downscale = downscale
        self.threshold = threshold
        self.start = start
        self.latent_side = latent_side
        self.total_steps = total_steps  # the schedule's length (None: the steps run), as the official num_ddim_steps
        self.maps: torch.Tensor | None = None  # (2, queries, L) summed over layers and steps
        self.mask: torch.Tensor | None = None  # the last blend mask, (h, w)

    def pick_level(self, available: set[int]) -> int:
        """The cross-attention downscale whose maps are used: the one nearest to the one asked for, among those
        whose maps keep at least ``MIN_SIDE`` cells a side (the finest one when none does). On SD (64x64
        latents) the official 16x16 maps are kept; on an 8x8-latent backbone the 8x8 maps are used, since the
        official 3x3 pooling of 2x2 maps marks every cell and the blend would change nothing."""
        wanted = self.downscale
        fine = [d for d in available if self.latent_side is None or self.latent_side // d >= self.MIN_SIDE]
        candidates = fine or [min(available)]
        return min(candidates, key=lambda d: (abs(d.bit_length() - wanted.bit_length()), -d))

    def store(self, probs: torch.Tensor) -> None:
        maps = probs.float().mean(1)  # (2, queries, L), conditional rows of source and target
        self.maps = maps if self.maps is None else self.maps + maps

    def __call__(self, step: Step, x: torch.Tensor) -> torch.Tensor:
        if self.maps is None or step.index < int(self.start * (self.total_steps or step.num_steps)):
            return x
        side = int(round(self.maps.shape[1] ** 0.5))
        maps = (self.maps * self.alphas.to(self.maps)[:, None, :]).sum(-1).view(2, 1, side, side)
        maps = F.max_pool2d(maps, 3, stride=1, padding=1)
        maps = F.interpolate(maps, size=x.shape[-2:])
        maps = maps / maps.flatten(1).max(1).values.clamp_min(1e-12).view(2, 1, 1, 1)
        mask = (maps > self.threshold).any(0).to(x.dtype)  # union of the source and target words' regions
        self.mask = mask[0]
        out = x.clone()
        out[1] = x[0] + mask * (x[1] - x[0])
        return out


class P2PControl(AttentionControl):
    """Cross- and self-attention replacement of the target branch (row 1) by the source's (row 0).

    The windows count steps from the first step run and are fractions of the whole schedule of ``total_steps``, as
    the official controllers are built with the schedule's length (``get_time_words_attention_alpha``: cross
    attention for the first ``int(cross * (N + 1))`` steps; self attention for ``int(self * N)``); with DDPM's skip
    or EDICT's strength fewer steps run than the schedule has.
    """

    def __init__(self, cross_map, cross_replace_steps: float, self_replace_steps: float, self_min_downscale: int,
                 equalizer: torch.Tensor | None, blend: LocalBlend | None, total_steps: int) -> None:
        super().__init__(num_branches=2)
        self.cross_map = cross_map
        self.cross_replace_steps = cross_replace_steps
        self.self_replace_steps = self_replace_steps
        self.self_min_downscale = self_min_downscale
        self.equalizer = equalizer
        self.blend = blend
        self.total_steps = total_steps

    def cross_window(self) -> bool:
        return self.step < int(self.cross_replace_steps * (self.total_steps + 1))

    def self_window(self) -> bool:
        return self.step < int(self.self_replace_steps * self.total_steps)

    def bind(self, layers: list[AttentionLayer]) -> None:
        if self.blend is not None:
            self.blend.downscale = self.blend.pick_level({layer.downscale for layer in layers if layer.is_cross})

    def active(self, layer: AttentionLayer) -> bool:
        if layer.is_cross:
            blending = self.blend is not None and layer.downscale == self.blend.downscale
            return self.cross_window() or blending
        return self.self_window() and layer.downscale >= self.self_min_downscale

    def needs_probs(self, layer: AttentionLayer) -> bool:
        return True

    def edit_probs(self, layer: AttentionLayer, probs: torch.Tensor) -> torch.Tensor:
        src, tgt = probs.shape[0] - 2, probs.shape[0] - 1  # the conditional rows
        if not layer.is_cross:
            probs[tgt] = probs[src]
            return probs
        if self.cross_window():
            new = self.cross_map(probs[src], probs[tgt])
            if self.equalizer is not None:
                new = new * self.equalizer.to(new)
            probs[tgt] = new
        if self.blend is not None and layer.downscale == self.blend.downscale:
            self.blend.store(probs[src:])  # after the replacement, as the official store sees them
        return probs

    def step_end(self, step: Step, latents: torch.Tensor) -> torch.Tensor:
        return latents if self.blend is None else self.blend(step, latents)


# --------------------------------------------------------------------------------------------------------
# The editor
# --------------------------------------------------------------------------------------------------------
class PromptToPrompt(Editor):
    name = "p2p"
    paper = "Hertz et al., Prompt-to-Prompt, ICLR 2023"
    presets = {"sd": Preset(source=PIE_P2P, settings={"num_inference_steps": 50, "target_guidance": 7.5})}

    def __init__(self, mode: str = "refine", cross_replace_steps: float = 0.4, self_replace_steps: float = 0.6,
                 self_replace_max_resolution: float = 0.5, local_blend: bool = True,
                 blend_words: list[list[str]] | str | None = None, blend_reweight: float = 2.0,
                 reweight: dict[str, float] | None = None, blend_threshold: float = 0.3, start_blend: float = 0.2,
                 blend_resolution: float = 0.25) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown P2P mode {mode!r}; valid: {', '.join(MODES)}")
        for key, value in (("cross_replace_steps", cross_replace_steps), ("self_replace_steps", self_replace_steps),
                           ("start_blend", start_blend)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {value}")
        two_lists = isinstance(blend_words, list | tuple) and len(blend_words) == 2 and all(
            isinstance(w, list | tuple) for w in blend_words)
        if not (blend_words is None or blend_words == "differing" or two_lists):
            raise ValueError(f"blend_words must be [[source words], [target words]], 'differing' or null, "
                             f"got {blend_words!r}")
        self.mode = mode
        self.cross_replace_steps = cross_replace_steps
        self.self_replace_steps = self_replace_steps
        self.self_replace_max_resolution = self_replace_max_resolution
        self.local_blend = local_blend
        self.blend_words = blend_words if isinstance(blend_words, str) or blend_words is None else \
            [list(blend_words[0]), list(blend_words[1])]
        self.blend_reweight = blend_reweight
        self.reweight = dict(reweight) if reweight else None
        self.blend_threshold = blend_threshold
        self.start_blend = start_blend
        self.blend_resolution = blend_resolution

    # --- helpers -----------------------------------------------------------------------------------------
    def _cross_map(self, tokenizer, source: str, target: str):
        replace = self.mode == "replace" or (self.mode == "auto" and len(source.split(" ")) == len(target.split(" ")))
        if replace:
            mapper = replace_mapper(tokenizer, source, target)
            return lambda src, tgt: torch.einsum("hqw,wn->hqn", src, mapper.to(src))
        index, alpha = refine_mapper(tokenizer, source, target)
        return lambda src, tgt: src[..., index.to(src.device)] * alpha.to(src) + tgt * (1 - alpha.to(src))

    def words_for(self, request: EditRequest) -> list[list[str]] | None:
        """The sample's blend words (``meta["blend_words"]``: PIE-Bench, ShapesWorld), else the configured ones."""
        sample = request.sample
        words: Any = sample.meta.get("blend_words") or self.blend_words
        if words is None:
            return None
        if words == "differing":
            return differing_words(sample.source_prompt, sample.target_prompt)
        pair = isinstance(words, list | tuple) and len(words) == 2
        if not (pair and all(isinstance(w, list | tuple) for w in words)):
            raise SampleError(f"blend words must be [[source words], [target words]], got {words!r}")
        return [[str(w) for w in words[0]], [str(w) for w in words[1]]]

    def _alphas(self, tokenizer, request: EditRequest, words: list[list[str]]) -> torch.Tensor:
        sample = request.sample
        alphas = torch.stack([word_weights(tokenizer, sample.source_prompt, dict.fromkeys(words[0], 1.0)),
                              word_weights(tokenizer, sample.target_prompt, dict.fromkeys(words[1], 1.0))])
        if not alphas.any():
            raise SampleError(f"P2P blend words {words} occur in neither prompt ({sample.source_prompt!r} / "
                              f"{sample.target_prompt!r})")
        return alphas

    def _equalizer(self, tokenizer, request: EditRequest, words: list[list[str]] | None) -> torch.Tensor | None:
        weights: dict[str, float] = {}
        if words is not None and self.blend_reweight != 1.0:
            weights |= dict.fromkeys(words[1], float(self.blend_reweight))  # PIE: eq_params on the target word
        weights |= self.reweight or {}
        if not weights:
            return None
        return word_weights(tokenizer, request.sample.target_prompt, weights, default=1.0)

    def _report(self, request: EditRequest, words: list[list[str]] | None, blend: LocalBlend | None) -> None:
        request.info["blend_words"] = words
        if blend is None or blend.mask is None:
            return
        mask = blend.mask.float().cpu().numpy() > 0.5
        size = request.sample.source_image.size
        request.info |= {f"blend_{k}": v for k, v in mask_report(mask, request.sample.mask, size).items()}
        request.extras["blend_mask"] = upsample_mask(mask, size)

    # --- the edit ----------------------------------------------------------------------------------------
    def edit(self, request: EditRequest) -> torch.Tensor:
        tok, sample = request.backbone.tokenizer, request.sample
        # 1. Token alignment of the two prompts (refine or replace), and the words to blend and reweight
        cross_map = self._cross_map(tok, sample.source_prompt, sample.target_prompt)
        words = self.words_for(request)
        blend, total = None, request.result.num_inference_steps
        if self.local_blend and words is not None:
            latent_side = min(request.result.latents.shape[-2:])
            blend = LocalBlend(self._alphas(tok, request, words), max(1, int(round(1.0 / self.blend_resolution))),
                               self.blend_threshold, self.start_blend, latent_side, total)
        # 2. The attention control, its windows on the whole schedule
        control = P2PControl(cross_map, self.cross_replace_steps, self.self_replace_steps,
                             max(1, int(round(1.0 / self.self_replace_max_resolution))),
                             self._equalizer(tok, request, words), blend, total)
        # 3. Denoise source and target together, the target reading the source's attention
        cond = torch.cat([request.source_embeds, request.target_embeds])
        with controlled_attention(request.backbone.unet, control):
            latents = denoise(request, cond, [request.source_guidance(), request.guidance_scale], source=0,
                              hooks=control)
        self._report(request, words, blend)
        return latents[1:2]
