"""Headless Chromium for tests: find (or install) it, load a local page offline, collect what happened.

``find_chromium()`` looks for a Chromium/Chrome binary (``$CHROMIUM`` first), installs Debian's
``chromium`` with apt-get when running as root and none is found, and otherwise skips the test — or
fails it under ``CI=true``, where a missing browser is a broken setup, not an excuse.

``load_page()`` opens a file with all networking pointed at a local recording proxy (so any request
the page makes is caught, not sent), with console logging on stderr; it returns the loaded DOM, the
page's console messages, the requests that reached the proxy and a screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
# requests Chromium makes by itself (component updater, time sync, sign-in), never the page's
BROWSER_OWN_HOSTS = re.compile(
    r"^(?:clients\d*\.google\.com|update\.googleapis\.com|accounts\.google\.com|"
    r"(?:www\.)?gstatic\.com/generate_204|optimizationguide-pa\.googleapis\.com|"
    r"safebrowsing[\w.-]*\.googleapis\.com|content-autofill\.googleapis\.com|"
    r"redirector\.gvt1\.com|edgedl\.me\.gvt1\.com|dl\.google\.com|android\.clients\.google\.com|"
    r"www\.google\.com|clientservices\.googleapis\.com)(?::\d+)?(?:/|$)"
)
CONSOLE_RE = re.compile(r":INFO:CONSOLE[^\]]*\]\s*(.*)$")


def _which() -> str | None:
    env = os.environ.get("CHROMIUM")
    if env and Path(env).exists():
        return env
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _apt_install() -> str:
    """Install Debian's chromium (root only); returns what happened, for the skip/fail message."""
    if not shutil.which("apt-get"):
        return "apt-get not available"
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        return "not root, cannot apt-get install chromium"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    if res.returncode != 0:  # stale package lists: update once and retry
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    return f"apt-get install chromium exited {res.returncode}: {res.stderr[-500:]}"


def find_chromium() -> str:
    """Path of a Chromium binary; installs one if possible, else skips (fails under CI=true)."""
    path = _which()
    if path:
        return path
    why = _apt_install()
    path = _which()
    if path:
        return path
    msg = f"no chromium for the browser check ({why})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg)
    pytest.skip(msg)


class _RecordingProxy:
    """A TCP listener standing in for an HTTP proxy: records each request line, answers nothing."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.requests: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(15.0)   # a loaded machine: wait for the request line (then filtered by host)
                try:
                    head = conn.recv(2048).decode("latin-1", "replace")
                except OSError:
                    head = ""
                self.requests.append(head.split("\r\n", 1)[0] or "<connection without request line>")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def _page_requests(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        parts = line.split()
        target = parts[1] if len(parts) > 1 else line
        target = re.sub(r"^https?://", "", target)
        if not BROWSER_OWN_HOSTS.match(target):
            out.append(line)
    return out


@dataclass
class PageResult:
    dom: str
    console: list[str]
    proxy_requests: list[str]
    screenshot: Path | None
    stderr: str = field(repr=False, default="")

    @property
    def console_errors(self) -> list[str]:
        """Every console message counts: the report logs nothing when all is well."""
        return self.console


def _flags(proxy_port: int, profile: str, window: tuple[int, int]) -> list[str]:
    return [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--enable-logging=stderr", "--v=0", f"--user-data-dir={profile}",
        f"--proxy-server=127.0.0.1:{proxy_port}", "--proxy-bypass-list=<-loopback>",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-extensions", "--disable-default-apps", "--no-first-run", "--no-default-browser-check",
        "--disable-domain-reliability", "--disable-client-side-phishing-detection", "--no-pings",
        "--hide-scrollbars", f"--window-size={window[0]},{window[1]}", "--virtual-time-budget=5000",
    ]


def load_page(chromium: str, html: Path, screenshot: Path | None = None, *, fragment: str | None = None,
              dump_dom: bool = True, window: tuple[int, int] = (1400, 1000), timeout: float = 120
              ) -> PageResult:
    """Open ``html`` offline; return its DOM (if ``dump_dom``), console, stray requests and screenshot."""
    url = Path(html).resolve().as_uri() + (f"#{fragment}" if fragment else "")
    proxy = _RecordingProxy()
    dom, stderr = "", ""
    try:
        with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
            base = [chromium, *_flags(proxy.port, profile, window)]
            if dump_dom:
                res = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True,
                                     timeout=timeout)
                dom, stderr = res.stdout, res.stderr
                if res.returncode != 0:
                    raise RuntimeError(f"chromium --dump-dom exited {res.returncode}: {res.stderr[-2000:]}")
            if screenshot is not None:
                screenshot = Path(screenshot)
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                shot_url = url
                if fragment:
                    # headless screenshots of a page scrolled to a fragment come out blank: frame it
                    frame = Path(profile) / "frame.html"
                    frame.write_text(
                        "<!doctype html><html><head><style>html,body{margin:0;overflow:hidden}"
                        "iframe{border:0;width:100vw;height:100vh;display:block}</style></head>"
                        f'<body><iframe src="{url}"></iframe></body></html>')
                    shot_url = frame.as_uri()
                res = subprocess.run([*base, f"--screenshot={screenshot}", shot_url], capture_output=True,
                                     text=True, timeout=timeout)
                stderr += res.stderr
                if res.returncode != 0 or not screenshot.exists():
                    raise RuntimeError(f"chromium --screenshot exited {res.returncode}: {res.stderr[-2000:]}")
    finally:
        proxy.close()
    console = [m.group(1) for line in stderr.splitlines() if (m := CONSOLE_RE.search(line))]
    return PageResult(dom=dom, console=console, proxy_requests=_page_requests(proxy.requests),
                      screenshot=screenshot, stderr=stderr)
