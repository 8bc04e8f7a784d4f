"""A client for any OpenAI-compatible chat-completions server (vLLM, SGLang, Ollama, ``transformers serve``,
hosted APIs): base URL, model, API key read from an environment variable, images as data URIs, decoding
settings, bounded concurrency, and retry with exponential back-off on 429 / 5xx / time-outs.

The API key is read when a request is sent and only ever placed in the ``Authorization`` header: it is never
part of a description, a cache key, an error message or a log line.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

log = logging.getLogger("editlab.judge")

RETRY_STATUS = (408, 409, 425, 429, 500, 502, 503, 504)


class JudgeServerError(RuntimeError):
    """The judge server could not be reached or kept failing after every retry."""


@dataclass
class Reply:
    """One chat-completion answer: its text, the model id the server says answered, and how it was obtained."""

    text: str
    served_model: str | None
    finish_reason: str | None = None
    attempts: int = 1
    seconds: float = 0.0
    usage: dict[str, Any] = field(default_factory=dict)


def encode_image(image: Image.Image, fmt: str = "png", jpeg_quality: int = 75) -> tuple[dict[str, Any], str]:
    """An OpenAI ``image_url`` content part with the image as a data URI, and the sha256 of the encoded bytes
    (what the server receives, so it is what the response cache is keyed by)."""
    fmt = fmt.lower()
    if fmt not in ("png", "jpeg"):
        raise ValueError(f"image format must be 'png' or 'jpeg', got {fmt!r}")
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.convert("RGB").save(buf, format="JPEG", quality=jpeg_quality)
    else:
        image.save(buf, format="PNG")
    data = buf.getvalue()
    uri = f"data:image/{fmt};base64," + base64.b64encode(data).decode("ascii")
    return {"type": "image_url", "image_url": {"url": uri}}, hashlib.sha256(data).hexdigest()


class JudgeClient:
    """Chat completions against ``base_url`` (ending in ``/v1``) for ``model``.

    ``max_retries`` bounds the retries of one request on connection errors, time-outs, 429 and 5xx replies
    (waiting ``backoff_s * 2**k`` seconds, or the server's ``Retry-After``); ``concurrency`` bounds the requests
    in flight at once across threads."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, timeout_s: float = 120.0,
                 max_retries: int = 4, backoff_s: float = 1.0, concurrency: int = 4,
                 extra_headers: dict[str, str] | None = None) -> None:
        import httpx2

        if not base_url:
            raise ValueError("judge client: base_url is empty")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.concurrency = max(1, int(concurrency))
        self._slots = threading.BoundedSemaphore(self.concurrency)
        self._extra_headers = dict(extra_headers or {})
        self._http = httpx2.Client(timeout=self.timeout_s,
                                   limits=httpx2.Limits(max_connections=self.concurrency + 2))

    # ----------------------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self._extra_headers}
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if key:
                headers["Authorization"] = f"Bearer {key}"
        return headers

    def describe(self) -> dict[str, Any]:
        """What identifies this judge endpoint (no secret: the key's variable name only)."""
        return {"base_url": self.base_url, "model": self.model, "api_key_env": self.api_key_env}

    def _send(self, method: str, path: str, payload: dict[str, Any] | None = None) -> tuple[Any, int]:
        """One request with retries; returns (response, attempts). Raises :class:`JudgeServerError`."""
        import httpx2

        url = f"{self.base_url}{path}"
        last = ""
        for attempt in range(self.max_retries + 1):
            wait = self.backoff_s * (2 ** attempt)
            try:
                response = self._http.request(method, url, json=payload, headers=self._headers())
            except httpx2.TimeoutException as err:
                last = f"timed out after {self.timeout_s:g} s ({type(err).__name__})"
            except httpx2.TransportError as err:
                last = f"no server answers ({type(err).__name__}: {err})"
            else:
                if response.status_code < 400:
                    return response, attempt + 1
                body = response.text[:300].replace("\n", " ")
                last = f"HTTP {response.status_code}: {body}"
                if response.status_code not in RETRY_STATUS:
                    raise JudgeServerError(f"judge server at {url} refused the request: {last}")
                retry_after = response.headers.get("retry-after")
                if retry_after:
                    try:
                        wait = max(wait, float(retry_after))
                    except ValueError:
                        pass
            if attempt < self.max_retries:
                log.info("judge request to %s failed (%s); retry %d/%d in %.1f s", url, last, attempt + 1,
                         self.max_retries, wait)
                time.sleep(wait)
        raise JudgeServerError(f"judge server at {url}: {last} (after {self.max_retries + 1} attempts)")

    def chat(self, content: list[dict[str, Any]], decoding: dict[str, Any]) -> Reply:
        """One user message with ``content`` parts (text and ``image_url``), decoded with ``decoding``
        (temperature, seed, max_tokens, top_p, ...: keys with value None are not sent)."""
        payload = {"model": self.model, "messages": [{"role": "user", "content": content}], "stream": False}
        payload |= {k: v for k, v in decoding.items() if v is not None}
        start = time.perf_counter()
        with self._slots:
            response, attempts = self._send("POST", "/chat/completions", payload)
        seconds = time.perf_counter() - start
        try:
            body = response.json()
            choice = body["choices"][0]
            text = choice["message"].get("content") or ""
        except (ValueError, KeyError, IndexError, TypeError, AttributeError) as err:
            raise JudgeServerError(f"judge server at {self.base_url} sent a reply without choices[0].message: "
                                   f"{type(err).__name__}: {response.text[:200]}") from err
        return Reply(text=text, served_model=body.get("model"), finish_reason=choice.get("finish_reason"),
                     attempts=attempts, seconds=seconds, usage=body.get("usage") or {})

    def server_info(self) -> dict[str, Any]:
        """The models the server lists (``GET /models``) and its version where it tells (``GET /version``,
        as vLLM does, and the ``Server`` header). Raises :class:`JudgeServerError` when nothing answers."""
        response, _ = self._send("GET", "/models")
        info: dict[str, Any] = {"server_header": response.headers.get("server")}
        try:
            info["models"] = [m.get("id") for m in response.json().get("data", [])]
        except (ValueError, AttributeError):
            info["models"] = []
        root = self.base_url[:-3] if self.base_url.endswith("/v1") else self.base_url
        try:
            version = self._http.get(f"{root}/version", headers=self._headers(), timeout=min(10.0, self.timeout_s))
            if version.status_code == 200:
                info["version"] = version.json()
        except Exception:  # optional endpoint: most servers do not have it
            pass
        return info

    def close(self) -> None:
        self._http.close()
