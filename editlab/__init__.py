"""editlab: a benchmark and evaluation harness for diffusion-model-based image editing."""

from pathlib import Path

__version__ = "0.1.0"

#: Repository root (holds ``configs/`` and ``weights/`` in a source checkout).
ROOT = Path(__file__).resolve().parent.parent
