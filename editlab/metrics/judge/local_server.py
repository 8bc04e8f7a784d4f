"""Start ``transformers serve`` on 127.0.0.1 for a local model folder (tests, benchmarks, trying a judge offline).

``transformers serve`` (transformers' own OpenAI-compatible server: FastAPI + uvicorn) loads any local
transformers model folder and answers ``/v1/chat/completions`` with images as data URIs, which is all a judge
needs. It runs in a child process on a free port and is stopped with it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalServer:
    """``with LocalServer(model_dir) as server: server.base_url`` -> ``http://127.0.0.1:<port>/v1``."""

    def __init__(self, model_dir: str | Path, port: int | None = None, startup_timeout_s: float = 120.0,
                 log_path: str | Path | None = None, extra_args: list[str] | None = None) -> None:
        self.model_dir = str(model_dir)
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.log_path = Path(log_path) if log_path else None
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        exe = shutil.which("transformers", path=os.path.dirname(sys.executable)) or shutil.which("transformers")
        if exe is None:
            raise RuntimeError("the `transformers` command is not installed (pip install 'transformers[serving]')")
        return [exe, "serve", self.model_dir, "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu",
                *self.extra_args]

    def start(self) -> LocalServer:
        import httpx2

        log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115 (kept open)
        env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode} before answering"
                                   + (f" (log: {self.log_path})" if self.log_path else ""))
            try:
                if httpx2.get(f"{self.base_url}/models", timeout=2.0).status_code == 200:
                    return self
            except httpx2.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"transformers serve did not answer at {self.base_url} within {self.startup_timeout_s:g} s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.proc = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
