"""Trainers for editlab's own ShapesWorld models (VAE, text-to-image, inpainting, instruction editing).

Each module exposes ``main(argv)`` and runs as ``python -m editlab.train.<name>``; ``evaluate`` measures the
figures of the model cards in ``weights/shapesworld/README.md``.
"""
