"""Prompt-to-Prompt (Hertz et al., "Prompt-to-Prompt Image Editing with Cross-Attention Control", ICLR 2023).

The source and target branches are denoised side by side. During the first ``cross_replace_steps`` of the
steps the target's cross-attention maps are taken from the source branch, mapped word to word:

* ``replace`` (prompts with the same number of words, some swapped): each target word's tokens receive the
  attention of the source word at the same position (split evenly when the two words have different token
  counts);
* ``refine`` (words added or removed): target tokens aligned to a source token (global alignment of the
  two token sequences) take its map, new tokens keep their own;
* ``reweight``: the target's maps of chosen words are scaled (on top of replace or refine).

During the first ``self_replace_steps`` the target's self-attention maps are replaced by the source's, in the
layers at most ``self_replace_max_resolution`` of the latent size. Optional local blending keeps the target
equal to the source outside the region the edited words attend to. As the official code, only the
conditional half of classifier-free guidance is controlled.

Defaults: PIE-Bench's (Ju et al., 2024) settings of the official code: cross 0.4, self 0.6, self-attention
replaced up to half the latent resolution (32x32 of SD's 64x64), ``mode="auto"`` (replace when the word
counts match, else refine); local blending (off by default) with the official threshold 0.3, start 0.2, 3x3
max-pooling, maps at a quarter of the latent resolution (16x16 on SD).
"""

from __future__ import annotations

import difflib

import torch
import torch.nn.functional as F

from editlab.methods.editors.attention import AttentionControl, AttentionLayer, controlled_attention
from editlab.methods.editors.base import Editor
from editlab.methods.editors.loop import EditRequest, Step, denoise
from editlab.types import SampleError

MODES = ("auto", "replace", "refine")


# --------------------------------------------------------------------------------------------------------
# Word and token alignment
# --------------------------------------------------------------------------------------------------------
def word_token_positions(tokenizer, prompt: str) -> list[list[int]]:
    """Token positions (in the padded sequence, after the start token) of each space-separated word."""
    positions, pos = [], 1
    limit = tokenizer.model_max_length - 1
    for word in prompt.split():
        n = len(tokenizer(word, add_special_tokens=False).input_ids)
        positions.append([p for p in range(pos, pos + n) if p < limit])
        pos += n
    return positions


def replace_mapper(tokenizer, source: str, target: str) -> torch.Tensor:
    """``(L, L)`` matrix M with target map[n] = sum_w source map[w] * M[w, n], for prompts of equal length."""
    length = tokenizer.model_max_length
    src_words, tgt_words = source.split(), target.split()
    if len(src_words) != len(tgt_words):
        raise SampleError(f"P2P replace needs prompts with the same number of words, got {len(src_words)} and "
                          f"{len(tgt_words)}; use mode 'refine' or 'auto'")
    mapper = torch.zeros(length, length)
    mapper[0, 0] = 1.0  # start token
    for src, tgt in zip(word_token_positions(tokenizer, source), word_token_positions(tokenizer, target)):
        if len(src) == len(tgt):
            mapper[src, tgt] = 1.0
        elif src and tgt:
            mapper[torch.tensor(src)[:, None], torch.tensor(tgt)[None, :]] = 1.0 / len(tgt)
    # the end token and padding follow in order
    s = 1 + sum(len(p) for p in word_token_positions(tokenizer, source))
    t = 1 + sum(len(p) for p in word_token_positions(tokenizer, target))
    while s < length and t < length:
        mapper[s, t] = 1.0
        s, t = s + 1, t + 1
    return mapper


def refine_mapper(tokenizer, source: str, target: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(index, alpha)`` of length L: target token n takes source token ``index[n]`` where ``alpha[n]`` is 1
    (aligned tokens), and keeps its own map where 0 (new tokens). Padding maps to itself."""
    length = tokenizer.model_max_length
    src = tokenizer(source, truncation=True, max_length=length).input_ids
    tgt = tokenizer(target, truncation=True, max_length=length).input_ids
    index, alpha = torch.arange(length), torch.ones(length)
    alpha[: len(tgt)] = 0.0
    for block in difflib.SequenceMatcher(a=src, b=tgt, autojunk=False).get_matching_blocks():
        for j in range(block.size):
            index[block.b + j], alpha[block.b + j] = block.a + j, 1.0
    return index, alpha


def word_weights(tokenizer, prompt: str, words: list[str] | dict[str, float], default: float = 0.0) -> torch.Tensor:
    """``(L,)`` per-token weight: ``words[w]`` (or 1 for a list) on the tokens of each occurrence of ``w``."""
    values = dict.fromkeys(words, 1.0) if isinstance(words, list | tuple) else dict(words)
    out = torch.full((tokenizer.model_max_length,), float(default))
    for word, pos in zip(prompt.split(), word_token_positions(tokenizer, prompt)):
        if word.lower() in values or word in values:
            out[pos] = float(values.get(word, values.get(word.lower())))
    return out


def differing_words(source: str, target: str) -> tuple[list[str], list[str]]:
    """Words of each prompt absent from the other (the default words for local blending)."""
    src, tgt = source.lower().split(), target.lower().split()
    return [w for w in src if w not in tgt], [w for w in tgt if w not in src]


# --------------------------------------------------------------------------------------------------------
# The attention control
# --------------------------------------------------------------------------------------------------------
class LocalBlend:
    """Keep the target equal to the source outside the words' attention (official ``LocalBlend``)."""

    #: the 3x3 max-pooling dilates the region by one cell: on maps smaller than this it covers the whole frame
    MIN_SIDE = 8

    def __init__(self, alphas: torch.Tensor, downscale: int, threshold: float, start: float,
                 latent_side: int | None = None) -> None:
        self.alphas = alphas  # (2, L): source words for the source branch, target words for the target
        self.downscale = downscale
        self.threshold = threshold
        self.start = start
        self.latent_side = latent_side
        self.maps: torch.Tensor | None = None  # (2, queries, L) summed over layers and steps

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
        if self.maps is None or step.index < int(self.start * step.num_steps):
            return x
        side = int(round(self.maps.shape[1] ** 0.5))
        maps = (self.maps * self.alphas.to(self.maps)[:, None, :]).sum(-1).view(2, 1, side, side)
        maps = F.max_pool2d(maps, 3, stride=1, padding=1)
        maps = F.interpolate(maps, size=x.shape[-2:])
        maps = maps / maps.flatten(1).max(1).values.clamp_min(1e-12).view(2, 1, 1, 1)
        mask = (maps > self.threshold).any(0).to(x.dtype)  # union of the source and target words' regions
        out = x.clone()
        out[1] = x[0] + mask * (x[1] - x[0])
        return out


class P2PControl(AttentionControl):
    """Cross- and self-attention replacement of the target branch (row 1) by the source's (row 0)."""

    def __init__(self, cross_map, cross_replace_steps: float, self_replace_steps: float, self_min_downscale: int,
                 equalizer: torch.Tensor | None, blend: LocalBlend | None) -> None:
        super().__init__(num_branches=2)
        self.cross_map = cross_map
        self.cross_replace_steps = cross_replace_steps
        self.self_replace_steps = self_replace_steps
        self.self_min_downscale = self_min_downscale
        self.equalizer = equalizer
        self.blend = blend

    def bind(self, layers: list[AttentionLayer]) -> None:
        if self.blend is not None:
            self.blend.downscale = self.blend.pick_level({layer.downscale for layer in layers if layer.is_cross})

    def active(self, layer: AttentionLayer) -> bool:
        if layer.is_cross:
            blending = self.blend is not None and layer.downscale == self.blend.downscale
            return self.until(self.cross_replace_steps) or blending
        return self.until(self.self_replace_steps) and layer.downscale >= self.self_min_downscale

    def needs_probs(self, layer: AttentionLayer) -> bool:
        return True

    def edit_probs(self, layer: AttentionLayer, probs: torch.Tensor) -> torch.Tensor:
        src, tgt = probs.shape[0] - 2, probs.shape[0] - 1  # the conditional rows
        if not layer.is_cross:
            probs[tgt] = probs[src]
            return probs
        if self.blend is not None and layer.downscale == self.blend.downscale:
            self.blend.store(probs[src:])
        if self.until(self.cross_replace_steps):
            new = self.cross_map(probs[src], probs[tgt])
            if self.equalizer is not None:
                new = new * self.equalizer.to(new)
            probs[tgt] = new
        return probs

    def step_end(self, step: Step, latents: torch.Tensor) -> torch.Tensor:
        return latents if self.blend is None else self.blend(step, latents)


# --------------------------------------------------------------------------------------------------------
# The editor
# --------------------------------------------------------------------------------------------------------
class PromptToPrompt(Editor):
    name = "p2p"
    paper = "Hertz et al., Prompt-to-Prompt, ICLR 2023"

    def __init__(self, mode: str = "auto", cross_replace_steps: float = 0.4, self_replace_steps: float = 0.6,
                 self_replace_max_resolution: float = 0.5, reweight: dict[str, float] | None = None,
                 local_blend: bool = False, blend_words: list[list[str]] | None = None, blend_threshold: float = 0.3,
                 start_blend: float = 0.2, blend_resolution: float = 0.25) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown P2P mode {mode!r}; valid: {', '.join(MODES)}")
        for key, value in (("cross_replace_steps", cross_replace_steps), ("self_replace_steps", self_replace_steps),
                           ("start_blend", start_blend)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{key} must be in [0, 1], got {value}")
        self.mode = mode
        self.cross_replace_steps = cross_replace_steps
        self.self_replace_steps = self_replace_steps
        self.self_replace_max_resolution = self_replace_max_resolution
        self.reweight = dict(reweight) if reweight else None
        self.local_blend = local_blend
        self.blend_words = blend_words
        self.blend_threshold = blend_threshold
        self.start_blend = start_blend
        self.blend_resolution = blend_resolution

    def _cross_map(self, tokenizer, source: str, target: str):
        replace = self.mode == "replace" or (self.mode == "auto" and len(source.split()) == len(target.split()))
        if replace:
            mapper = replace_mapper(tokenizer, source, target)
            return lambda src, tgt: torch.einsum("hqw,wn->hqn", src, mapper.to(src))
        index, alpha = refine_mapper(tokenizer, source, target)
        return lambda src, tgt: src[..., index.to(src.device)] * alpha.to(src) + tgt * (1 - alpha.to(src))

    def _blend(self, request: EditRequest) -> LocalBlend | None:
        if not self.local_blend:
            return None
        tok, sample = request.backbone.tokenizer, request.sample
        words = sample.meta.get("blend_words") or self.blend_words
        words = words or differing_words(sample.source_prompt, sample.target_prompt)
        alphas = torch.stack([word_weights(tok, sample.source_prompt, list(words[0])),
                              word_weights(tok, sample.target_prompt, list(words[1]))])
        if not alphas.any():
            return None
        downscale = max(1, int(round(1.0 / self.blend_resolution)))
        latent_side = min(request.result.latents.shape[-2:])
        return LocalBlend(alphas, downscale, self.blend_threshold, self.start_blend, latent_side)

    def edit(self, request: EditRequest) -> torch.Tensor:
        tok, sample = request.backbone.tokenizer, request.sample
        # 1. Word alignment of the two prompts through the tokenizer
        cross_map = self._cross_map(tok, sample.source_prompt, sample.target_prompt)
        equalizer = word_weights(tok, sample.target_prompt, self.reweight, default=1.0) if self.reweight else None
        # 2. The attention control (and local blending by words)
        control = P2PControl(cross_map, self.cross_replace_steps, self.self_replace_steps,
                             max(1, int(round(1.0 / self.self_replace_max_resolution))), equalizer,
                             self._blend(request))
        # 3. Denoise source and target together, the target reading the source's attention
        cond = torch.cat([request.source_embeds, request.target_embeds])
        with controlled_attention(request.backbone.unet, control):
            latents = denoise(request, cond, [request.source_guidance(), request.guidance_scale], source=0,
                              hooks=control)
        return latents[1:2]
