"""A headless Chromium driven over the DevTools protocol (websockets), for the report
tests: load a page, collect its console messages, exceptions, log entries and network
requests, evaluate JavaScript and take a screenshot."""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> Optional[str]:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageLoad:
    """What a page did while it loaded and rendered."""

    console: list[dict[str, Any]] = field(default_factory=list)
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    log_entries: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


class Browser:
    """One headless Chromium with a page target; ``close()`` ends the process it started."""

    def __init__(self, executable: str, profile: Path, width: int = 1280, height: int = 2400):
        self.proc = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._id = 0
        self.ws: Any = None
        self._stack = contextlib.ExitStack()
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        try:
            port = self._port()
            self.ws = self._connect(port)
        except BaseException:
            self.close()
            raise

    def _port(self) -> int:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line and self.proc.poll() is not None:
                break
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                # keep reading its log, so a full pipe never blocks the browser
                self._drainer.start()
                return int(match.group(1))
        raise RuntimeError("chromium did not start its DevTools endpoint")

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for _line in self.proc.stderr:
            pass

    def _connect(self, port: int) -> Any:
        from websockets.sync.client import connect

        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as resp:
            targets = json.load(resp)
        page = next(t for t in targets if t.get("type") == "page")
        client = connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        return self._stack.enter_context(client)

    def call(self, method: str, events: Optional[PageLoad] = None, **params: Any) -> Any:
        """Send a command and return its result, filing the events that arrive meanwhile."""
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            if events is not None:
                _file(events, msg)

    def evaluate(self, expression: str, events: Optional[PageLoad] = None) -> Any:
        result = self.call(
            "Runtime.evaluate", events, expression=expression, returnByValue=True, awaitPromise=True
        )
        return result.get("result", {}).get("value")

    def load(self, url: str, ready: str, timeout: float = 120) -> PageLoad:
        """Open ``url`` and wait until the JavaScript ``ready`` is true."""
        events = PageLoad()
        for domain in ("Runtime", "Log", "Network", "Page"):
            self.call(f"{domain}.enable", events)
        self.call("Page.navigate", events, url=url)
        deadline = time.monotonic() + timeout
        while not self.evaluate(f"Boolean({ready})", events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not become ready ({ready})")
            time.sleep(0.2)
        time.sleep(0.5)  # late messages (a failing resize, a deferred load)
        self.evaluate("1", events)
        return events

    def screenshot(self) -> bytes:
        result = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return base64.b64decode(result["data"])

    def close(self) -> None:
        self._stack.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._drainer.is_alive():
            self._drainer.join(timeout=10)
        if self.proc.stderr is not None and not self._drainer.is_alive():
            self.proc.stderr.close()


def _file(events: PageLoad, msg: dict[str, Any]) -> None:
    method, params = msg.get("method"), msg.get("params", {})
    if method == "Runtime.consoleAPICalled":
        events.console.append(params)
    elif method == "Runtime.exceptionThrown":
        events.exceptions.append(params)
    elif method == "Log.entryAdded":
        events.log_entries.append(params.get("entry", {}))
    elif method == "Network.requestWillBeSent":
        events.requests.append(params.get("request", {}).get("url", ""))
