"""Editing methods. Each method is one file; see :class:`editlab.methods.base.EditMethod`."""

from editlab.methods.base import EditMethod

__all__ = ["EditMethod"]
