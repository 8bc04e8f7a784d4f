"""Inversions: from a source image to the start of a denoising trajectory that can return to it.

One file per inversion; each returns an :class:`InversionResult`. Names are registered in
:data:`editlab.registry.INVERSIONS` and configured under ``configs/inversion/``.
"""

from editlab.methods.inversion.base import Inversion, InversionResult

__all__ = ["Inversion", "InversionResult"]
