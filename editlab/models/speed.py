"""Speed switches of diffusers models, off by default where they change outputs, always recorded.

A backbone config's ``speed`` node (``configs/backbone/*.yaml``) sets them; :func:`normalize_speed` validates it
and the resolved settings are stored in :attr:`Backbone.speed`, written to ``backbone.json`` with every run
(the run key hashes the backbone config, so outputs made with other switches never mix):

``attention_backend``
    ``null`` (diffusers' default, torch SDPA) or a name of ``diffusers.attention_dispatch.AttentionBackendName``
    (``native``, ``flash``, ``_native_cudnn``, ``sage``, ...), set with ``ModelMixin.set_attention_backend`` on the
    denoiser. Numerics differ slightly between kernels.
``compile``
    ``none``; ``regional`` compiles each repeated transformer block once (``ModelMixin.compile_repeated_blocks``,
    the recommended form: fast warm-up, same speed-up); ``full`` compiles the whole denoiser in place
    (``nn.Module.compile``).
``offload``
    ``none``; ``model`` (``enable_model_cpu_offload``: whole components move to the GPU when used) or
    ``sequential`` (``enable_sequential_cpu_offload``: layer by layer, slowest, least memory), for models larger
    than the GPU. Applied to every pipeline a method builds (:func:`apply_pipeline_speed`); weights stay on the
    CPU until used.
``cache``
    ``null`` or ``{type: first_block, threshold: 0.05}``: diffusers' First-Block-Cache hook
    (``FirstBlockCacheConfig``, ``ModelMixin.enable_cache``) skips the remaining blocks of a step when the first
    block's residual changed by less than ``threshold``; it changes outputs, and
    ``benchmarks/modern_editors.py`` measures by how much (PSNR of cached vs uncached output on the same seed).
    It needs a denoiser with diffusers' ``CacheMixin`` (FLUX, Qwen-Image). Pipelines that do not name their
    denoiser calls themselves (in diffusers 0.42: FLUX img2img / inpaint / Fill / Kontext) are called inside
    :func:`pipeline_cache_context` (one ``cond`` branch: these are guidance-distilled, one forward per step);
    the hook state is reset after every pipeline call (diffusers' ``maybe_free_model_hooks``) and at the start
    of every FlowEdit / RF-Inversion edit (:func:`reset_cache`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COMPILE = ("none", "regional", "full")
OFFLOAD = ("none", "model", "sequential")
CACHES = ("first_block",)


def normalize_speed(speed: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validated speed settings with every key present (defaults: all off)."""
    speed = dict(speed or {})
    unknown = set(speed) - {"attention_backend", "compile", "offload", "cache"}
    if unknown:
        raise ValueError(f"unknown speed setting(s) {sorted(unknown)}, available: attention_backend, compile, "
                         f"offload, cache")
    out = {
        "attention_backend": speed.get("attention_backend"),
        "compile": str(speed.get("compile") or "none"),
        "offload": str(speed.get("offload") or "none"),
        "cache": dict(speed["cache"]) if speed.get("cache") else None,
    }
    if out["compile"] not in COMPILE:
        raise ValueError(f"unknown speed.compile '{out['compile']}', available: {', '.join(COMPILE)}")
    if out["offload"] not in OFFLOAD:
        raise ValueError(f"unknown speed.offload '{out['offload']}', available: {', '.join(OFFLOAD)}")
    if out["attention_backend"] is not None:
        from diffusers.models.attention_dispatch import AttentionBackendName

        names = [b.value for b in AttentionBackendName]
        if out["attention_backend"] not in names:
            raise ValueError(f"unknown speed.attention_backend '{out['attention_backend']}', available: "
                             f"{', '.join(names)}")
    if out["cache"] is not None:
        kind = out["cache"].get("type")
        if kind not in CACHES:
            raise ValueError(f"unknown speed.cache.type '{kind}', available: {', '.join(CACHES)}")
        out["cache"] = {"type": kind, "threshold": float(out["cache"].get("threshold", 0.05))}
    return out


def apply_speed(backbone: Any) -> None:
    """Apply the denoiser-level switches (attention backend, cache, compile) of ``backbone.speed``."""
    speed = backbone.speed
    denoiser = backbone.denoiser
    if speed["offload"] != "none" and backbone.device.type == "cpu":
        raise ValueError(f"speed.offload={speed['offload']} moves weights between the CPU and an accelerator, but "
                         f"this backbone runs on the CPU; use device=cuda or speed.offload=none")
    if speed["attention_backend"] is not None:
        denoiser.set_attention_backend(speed["attention_backend"])
    if speed["cache"] is not None:
        if not hasattr(denoiser, "enable_cache"):
            raise ValueError(f"speed.cache needs a denoiser with diffusers' caching hooks (CacheMixin: FLUX, "
                             f"Qwen-Image); {type(denoiser).__name__} of family '{backbone.family}' has none")
        from diffusers import FirstBlockCacheConfig

        denoiser.enable_cache(FirstBlockCacheConfig(threshold=speed["cache"]["threshold"]))
    if speed["compile"] == "regional":
        if not getattr(denoiser, "_repeated_blocks", None):
            raise ValueError(f"speed.compile=regional needs a denoiser that names its repeated blocks; "
                             f"{type(denoiser).__name__} does not: use speed.compile=full")
        denoiser.compile_repeated_blocks(fullgraph=True)
    elif speed["compile"] == "full":
        denoiser.compile()


def apply_pipeline_speed(pipe: Any, backbone: Any) -> Any:
    """Apply the pipeline-level switch (CPU offload) to a pipeline built from ``backbone``."""
    offload = backbone.speed.get("offload", "none") if getattr(backbone, "speed", None) else "none"
    if offload == "model":
        pipe.enable_model_cpu_offload(device=backbone.device)
    elif offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=backbone.device)
    return pipe


def cache_context(denoiser: Any, name: str) -> Any:
    """``denoiser.cache_context(name)`` when the denoiser has caching hooks (pipelines wrap each branch's forward in
    one: ``cond``, ``uncond``), else a no-op context."""
    from contextlib import nullcontext

    return denoiser.cache_context(name) if hasattr(denoiser, "cache_context") else nullcontext()


def pipeline_cache_context(backbone: Any) -> Any:
    """The context a method wraps a pipeline call in: ``cache_context("cond")`` when a caching hook is on (pipelines
    that name their branches themselves override it inside), else a no-op."""
    from contextlib import nullcontext

    if not (getattr(backbone, "speed", None) or {}).get("cache"):
        return nullcontext()
    return cache_context(backbone.denoiser, "cond")


def reset_cache(denoiser: Any) -> None:
    """Forget the caching hooks' state (the previous edit's residuals)."""
    if getattr(denoiser, "is_cache_enabled", False):
        denoiser._reset_stateful_cache()
