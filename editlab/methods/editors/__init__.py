"""Editors: what to do with an inversion (prompt swap, attention control, feature injection, guidance).

One file per editor; they share the denoising loop of :mod:`editlab.methods.editors.loop` and the attention
processors of :mod:`editlab.methods.editors.attention`. Names are registered in
:data:`editlab.registry.EDITORS` and configured under ``configs/editor/``.
"""

from editlab.methods.editors.base import Editor
from editlab.methods.editors.loop import EditRequest, LoopHooks, denoise, reconstruct

__all__ = ["EditRequest", "Editor", "LoopHooks", "denoise", "reconstruct"]
