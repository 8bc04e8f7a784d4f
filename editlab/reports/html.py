"""Shared pieces of editlab's static HTML pages: escaping, the page shell and its style sheet.

Pages are self-contained (no external requests): style inline, images as data URIs. Dataset text only ever
enters a page escaped (jinja2 with autoescape, or :func:`esc`), never inside a ``<script>``.
"""

from __future__ import annotations

import base64
import html
import io
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from PIL import Image

TEMPLATE_DIR = Path(__file__).parent / "templates"

STYLE = """
body { font-family: system-ui, -apple-system, "DejaVu Sans", sans-serif; margin: 1.5rem; color: #1b1b1b; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; }
table.results { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .85rem; }
table.results th, table.results td { border-bottom: 1px solid #ddd; padding: .25rem .5rem; text-align: right; }
table.results td:first-child, table.results th:first-child { text-align: left; }
table.results th.group { border-bottom: 2px solid #555; text-align: center; }
table.results tr.strategy td { text-align: left; font-style: italic; background: #f3f3f3; }
td.best { font-weight: bold; } sup.sig { color: #a00; }
p.note, .muted { color: #555; font-size: .85rem; }
code { background: #f3f3f3; padding: 0 .2rem; }
"""



@lru_cache(maxsize=1)
def environment() -> Environment:
    """The jinja2 environment over ``editlab/reports/templates``, autoescaping every template."""
    return Environment(loader=FileSystemLoader(TEMPLATE_DIR), autoescape=select_autoescape(default=True),
                       trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def render(template: str, **context: Any) -> str:
    """Render one of the templates (dataset text in ``context`` is escaped by the template engine)."""
    return environment().get_template(template).render(style=STYLE, **context)


def esc(text: Any) -> str:
    """HTML-escape any value (quotes included)."""
    return html.escape(str(text), quote=True)


def cell_html(cell: Any) -> str:
    """A table cell (:class:`editlab.bench.tables.Cell`) as ``<td>``: best in bold, dagger for worse."""
    cls = ' class="best"' if cell.best else ""
    sig = '<sup class="sig">†</sup>' if cell.worse else ""
    return f"<td{cls}>{esc(cell.text)}{sig}</td>"


def page(title: str, body_html: str) -> str:
    """A complete page around already-escaped ``body_html``."""
    return render("page.html", title=title, body=body_html)


def image_data_uri(image: Image.Image, max_side: int | None = None, fmt: str | None = None) -> str:
    """An image as a ``data:`` URI, shrunk to ``max_side`` pixels; RGB as JPEG, masks (L) and others as PNG."""
    image = image.copy()
    if max_side is not None and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.BICUBIC)
    if fmt is None:
        fmt = "JPEG" if image.mode == "RGB" else "PNG"
    if fmt == "JPEG" and image.mode != "RGB":
        image = image.convert("RGB")
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": 88} if fmt == "JPEG" else {"optimize": True}))
    mime = "image/jpeg" if fmt == "JPEG" else "image/png"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode('ascii')}"
