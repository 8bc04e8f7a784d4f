"""The HTML gallery and the rating page in a real headless Chromium, driven over the DevTools protocol.

Checks that the pages load without console errors or exceptions, that hostile dataset text stays text, that the
task-type and method filters work, that the rating page saves what the rater chose (and that the saved file
imports), and takes screenshots. Skips only when no Chromium binary is installed
(Debian: ``apt-get install -y chromium``). The protocol client is a minimal websocket client (stdlib only).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_reports import make_results

from editlab.bench.tables import build_model, find_runs
from editlab.reports.gallery import render_gallery
from editlab.reports.human import analyse_ratings, export_rating_page

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium binary found (apt-get install -y chromium)")


class DevTools:
    """Just enough of a websocket client to speak the Chrome DevTools protocol to one page."""

    def __init__(self, ws_url: str, timeout: float = 30.0) -> None:
        url = urllib.parse.urlparse(ws_url)
        self.sock = socket.create_connection((url.hostname, url.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {url.path} HTTP/1.1\r\nHost: {url.hostname}:{url.port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
                          .encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += self.sock.recv(4096)
        head, self.buf = data.split(b"\r\n\r\n", 1)
        assert b" 101 " in head.split(b"\r\n")[0], head
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _send(self, text: str) -> None:
        payload, mask = text.encode(), os.urandom(4)
        n = len(payload)
        head = bytes([0x81]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n)
                                if n < 65536 else bytes([0x80 | 127]) + struct.pack(">Q", n))
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("DevTools connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _message(self) -> dict[str, Any]:
        parts = []
        while True:
            b1, b2 = self._read(2)
            n = b2 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._read(8))[0]
            payload = self._read(n)
            opcode = b1 & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools connection closed")
            if opcode in (0x0, 0x1, 0x2):
                parts.append(payload)
                if b1 & 0x80:
                    return json.loads(b"".join(parts))

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self._send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = self._message()
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_for(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = next((e for e in self.events if e.get("method") == event), None)
            if hit is not None:
                self.events.remove(hit)
                return hit
            self.events.append(self._message())
        raise TimeoutError(event)

    def js(self, expression: str) -> Any:
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def open(self, path: Path) -> None:
        self.events.clear()
        self.call("Page.navigate", url=path.resolve().as_uri())
        self.wait_for("Page.loadEventFired")
        self.js("1")  # let pending console / exception events arrive

    def problems(self) -> list[str]:
        """Console errors, uncaught exceptions and dialogs (an injected alert would open one) seen so far."""
        out = []
        for e in self.events:
            p = e.get("params", {})
            if e.get("method") == "Runtime.exceptionThrown":
                out.append(json.dumps(p.get("exceptionDetails"))[:500])
            elif e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(json.dumps(p.get("args"))[:500])
            elif e.get("method") == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                out.append(p["entry"].get("text", "")[:500])
            elif e.get("method") == "Page.javascriptDialogOpening":
                out.append(f"dialog: {p.get('message')}")
        return out

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def click(self, selector: str) -> None:
        """A real mouse click (pressed and released) at the centre of the element."""
        box = self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)}).getBoundingClientRect();"
                      " return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=box[0], y=box[1], button="left", clickCount=1)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    profile = tmp_path_factory.mktemp("chromium-profile")
    proc = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                             "--disable-extensions", "--disable-dev-shm-usage", "--remote-debugging-port=0",
                             f"--user-data-dir={profile}", "--window-size=1280,900", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        port, deadline = None, time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line and proc.poll() is not None:
                raise RuntimeError("chromium exited before DevTools was ready")
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            port = int(m.group(1)) if m else None
        assert port is not None, "chromium did not start DevTools"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
            targets = json.loads(resp.read())
        page = next(t for t in targets if t["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Log"):
            tools.call(f"{domain}.enable")
        yield tools
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _visible(tools: DevTools, selector: str) -> int:
    return tools.js(f"Array.from(document.querySelectorAll({json.dumps(selector)}))"
                    ".filter(e => e.offsetParent !== null).length")


def _shot_dir(tmp_path: Path) -> Path:
    """Screenshots go to the test's folder, or to $EDITLAB_SCREENSHOT_DIR to keep them (e.g. as CI artifacts)."""
    out = Path(os.environ.get("EDITLAB_SCREENSHOT_DIR", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_gallery_in_chromium(browser: DevTools, tmp_path: Path) -> None:
    runs = build_model(find_runs([make_results(tmp_path)])).runs
    page = render_gallery(runs, tmp_path / "gallery.html")
    browser.open(page)
    assert browser.problems() == []
    # hostile prompts are text: nothing injected ran, the text is shown as typed
    assert browser.js("window.__pwned === undefined && document.scripts.length === 1")
    assert browser.js("document.body.innerText.includes('a <script>window.__pwned = 1</script> cat')")
    assert browser.js("document.querySelectorAll('td.info img, td.info b, td.info u').length") == 0
    assert _visible(browser, "tr.sample") == 9
    assert browser.js("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    browser.screenshot(_shot_dir(tmp_path) / "gallery.png")

    # task-type filter: only that type's rows stay visible, and the counter follows
    browser.js("(() => { const s = document.getElementById('task-filter'); s.value = 'object_removal';"
               " s.dispatchEvent(new Event('change', {bubbles: true})); })()")
    assert _visible(browser, "tr.sample") == 3
    assert browser.js("Array.from(document.querySelectorAll('tr.sample')).filter(r => r.offsetParent !== null)"
                      ".every(r => r.dataset.task === 'object_removal')")
    assert browser.js("document.getElementById('visible-count').textContent") == "3"

    # method filter, by a real click on the checkbox: that method's column disappears, the others stay
    label = browser.js("document.querySelector(\"th[data-method='m1']\").firstChild.textContent")
    assert label == "bad"
    browser.click("input.method-toggle[value='m1']")
    assert browser.js("document.querySelector(\"input.method-toggle[value='m1']\").checked") is False
    assert _visible(browser, "[data-method='m1']") == 0
    assert _visible(browser, "[data-method='m2']") == 1 + 3
    shot = browser.screenshot(_shot_dir(tmp_path) / "gallery_filtered.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5000
    assert browser.problems() == []


def test_rating_page_in_chromium(browser: DevTools, tmp_path: Path) -> None:
    runs = build_model(find_runs([make_results(tmp_path)])).runs
    paths = export_rating_page(runs, tmp_path / "human", "pairwise", max_items=5)
    browser.open(paths["page"])
    assert browser.problems() == []
    assert browser.js("document.querySelectorAll('section.item').length") == 5
    browser.js("document.getElementById('rater').value = 'ann'")
    browser.click("section.item:nth-of-type(1) input[value='A']")
    browser.click("section.item:nth-of-type(2) input[value='tie']")
    assert browser.js("document.getElementById('done-count').textContent") == "2"
    # saving creates a download; capture the file's content as the browser builds it
    browser.js("window.__saved = []; const make = URL.createObjectURL;"
               " URL.createObjectURL = b => { window.__saved.push(b); return make(b); };")
    browser.click("#save-json")
    saved = json.loads(browser.js("window.__saved[0].text()"))
    assert saved["rater"] == "ann" and saved["mode"] == "pairwise"
    assert [r["choice"] for r in saved["ratings"]] == ["A", "tie"]
    browser.click("#save-csv")
    csv_text = browser.js("window.__saved[1].text()")
    assert csv_text.splitlines()[0] == "page_id,mode,rater,item,choice" and len(csv_text.splitlines()) == 3
    browser.screenshot(_shot_dir(tmp_path) / "rating_page.png")
    assert browser.problems() == []
    (tmp_path / "ann.json").write_text(json.dumps(saved))
    (tmp_path / "ann.csv").write_text(csv_text)
    analysis = analyse_ratings([tmp_path / "ann.json"], paths["key"], n_boot=50)
    assert analysis["n_ratings"] == 2 and len(analysis["comparisons"]) == 2
