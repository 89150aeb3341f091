"""Take headless Chromium screenshots of the admin pages (used by ``scripts/screenshots``).

Logs in through the admin's own login form, then drives Chromium over the DevTools protocol with
a tiny WebSocket client (standard library only; no selenium or playwright): set the session
cookie, open each page, wait for its load event, capture the whole page as a PNG.

    python scripts/lib/screenshots.py --base http://127.0.0.1:8765 --out screenshots
"""

from __future__ import annotations

import argparse
import base64
import http.cookiejar
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

WIDTH = 1440
HEIGHT = 900
MAX_HEIGHT = 4000
TIMEOUT = 30.0


class WebSocket:
    """A client WebSocket with just what the DevTools protocol needs: text frames, no TLS."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=TIMEOUT)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = b""
        while b"\r\n\r\n" not in response:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("DevTools closed the connection during the handshake")
            response += chunk
        if b" 101 " not in response.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"DevTools refused the WebSocket: {response[:200]!r}")
        self.buffer = response.split(b"\r\n\r\n", 1)[1]

    def _read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def send(self, text: str) -> None:
        payload = text.encode()
        header = bytes([0x81])  # FIN, text
        if len(payload) < 126:
            header += bytes([0x80 | len(payload)])
        elif len(payload) < 1 << 16:
            header += bytes([0x80 | 126]) + struct.pack("!H", len(payload))
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", len(payload))
        mask = os.urandom(4)  # a client must mask what it sends
        masked = bytes(byte ^ mask[index % 4] for index, byte in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._read(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", self._read(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", self._read(8))
            payload = self._read(size)  # the server never masks
            if first & 0x0F == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            if first & 0x0F in (0x9, 0xA):  # ping / pong: not part of a message
                continue
            message += payload
            if first & 0x80:
                return message.decode()


class Page:
    """One Chromium tab driven over the DevTools protocol."""

    def __init__(self, url: str) -> None:
        self.socket = WebSocket(url)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.socket.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self.events.append(message)

    def wait_for_event(self, method: str) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            for index, event in enumerate(self.events):
                if event.get("method") == method:
                    del self.events[: index + 1]
                    return
            self.events.append(json.loads(self.socket.receive()))
        raise TimeoutError(f"no {method} within {TIMEOUT} s")

    def open(self, url: str, *, dark: bool = False) -> None:
        self.call(
            "Emulation.setDeviceMetricsOverride",
            width=WIDTH,
            height=HEIGHT,
            deviceScaleFactor=1,
            mobile=False,
        )
        scheme = {"name": "prefers-color-scheme", "value": "dark" if dark else "light"}
        self.call("Emulation.setEmulatedMedia", features=[scheme])
        self.events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired")

    def submit(self, script: str) -> None:
        """Run ``script`` (it submits a form) and wait for the page it leads to."""
        self.events.clear()
        self.call("Runtime.evaluate", expression=script)
        self.wait_for_event("Page.loadEventFired")

    def screenshot(self, url: str | None, path: Path, *, dark: bool = False) -> None:
        """Capture the page at ``url`` (None: the page open now) as a PNG."""
        if url is not None:
            self.open(url, dark=dark)
        metrics = self.call("Page.getLayoutMetrics")
        height = min(MAX_HEIGHT, max(HEIGHT, int(metrics["cssContentSize"]["height"])))
        shot = self.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": WIDTH, "height": height, "scale": 1},
        )
        path.write_bytes(base64.b64decode(shot["data"]))


def log_in(base: str, username: str, password: str) -> str:
    """Log in through the admin login form; return the session id."""
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    form = opener.open(f"{base}/admin/login/", timeout=TIMEOUT).read().decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form)
    if token is None:
        raise RuntimeError("no CSRF token in the admin login form")
    data = urllib.parse.urlencode(
        {
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": token.group(1),
            "next": "/admin/",
        }
    ).encode()
    request = urllib.request.Request(f"{base}/admin/login/", data, headers={"Referer": base})
    opener.open(request, timeout=TIMEOUT)
    session = next((cookie.value for cookie in jar if cookie.name == "sessionid"), None)
    if not session:
        raise RuntimeError(f"logging in as {username} failed")
    return session


def first_change_url(base: str, session: str, listing: str) -> str:
    """Return the URL of the first row's change page in the admin list at ``listing``."""
    request = urllib.request.Request(base + listing, headers={"Cookie": f"sessionid={session}"})
    page = urllib.request.urlopen(request, timeout=TIMEOUT).read().decode()
    path = urllib.parse.urlsplit(listing).path
    found = re.search(rf'href="({re.escape(path)}\d+/change/)', page)
    if found is None:
        raise RuntimeError(f"no row in {listing}")
    return found.group(1)


#: the worker actions, each with its confirmation page
WORKER_ACTIONS = (
    "shutdown_workers",
    "pool_grow_workers",
    "pool_shrink_workers",
    "add_consumer_workers",
    "cancel_consumer_workers",
)


def choose_action(hostname: str, action: str) -> str:
    """Return a script that selects ``hostname`` in the workers list and runs ``action``."""
    return f"""
      for (const row of document.querySelectorAll("#result_list tbody tr")) {{
        if (row.textContent.includes({json.dumps(hostname)})) {{
          row.querySelector("input.action-select").checked = true;
        }}
      }}
      document.querySelector("select[name=action]").value = {json.dumps(action)};
      document.querySelector("#changelist-form").submit();
    """


def start_chromium(profile: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start headless Chromium; return it and the DevTools WebSocket URL of its first tab."""
    binary = (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )
    if binary is None:
        raise SystemExit("Chromium is not installed (Debian: apt-get install -y chromium)")
    process = subprocess.Popen(
        [
            binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={WIDTH},{HEIGHT}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    port_file = profile / "DevToolsActivePort"
    deadline = time.monotonic() + TIMEOUT
    while not port_file.exists() or not port_file.read_text().strip():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise SystemExit("Chromium did not start its DevTools server")
        time.sleep(0.1)
    port = port_file.read_text().split()[0]
    tabs = json.loads(
        urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=TIMEOUT).read()
    )
    page = next(tab for tab in tabs if tab.get("type") == "page")
    return process, page["webSocketDebuggerUrl"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the example project's URL")
    parser.add_argument("--out", type=Path, required=True, help="folder for the PNG files")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="admin")
    parser.add_argument(
        "--live-worker", help="a running worker: its page and the five action confirmations"
    )
    options = parser.parse_args()
    base = options.base.rstrip("/")
    options.out.mkdir(parents=True, exist_ok=True)
    session = log_in(base, options.user, options.password)
    pages = [
        ("01-admin-index", "/admin/", "en"),
        ("02-dashboard", "/admin/django_tq/dashboard/", "en"),
        ("03-dashboard-last-hour", "/admin/django_tq/dashboard/?window=1h", "en"),
        ("04-results", "/admin/django_tq/taskresult/", "en"),
        ("05-results-failed", "/admin/django_tq/taskresult/?state__exact=FAILURE", "en"),
        (
            "06-result-failure",
            first_change_url(base, session, "/admin/django_tq/taskresult/?state__exact=FAILURE"),
            "en",
        ),
        (
            "07-result-progress",
            first_change_url(base, session, "/admin/django_tq/taskresult/?state__exact=PROGRESS"),
            "en",
        ),
        ("08-dead-letters", "/admin/django_tq/deadletter/", "en"),
        ("09-workers", "/admin/django_tq/workerstate/", "en"),
        ("10-queue", "/admin/django_tq/queuemessage/", "en"),
        ("11-periodic-tasks", "/admin/django_tq/periodictask/", "en"),
        (
            "12-periodic-task",
            first_change_url(base, session, "/admin/django_tq/periodictask/"),
            "en",
        ),
        ("13-dashboard-zh-hans", "/admin/django_tq/dashboard/", "zh-hans"),
        ("14-results-zh-hans", "/admin/django_tq/taskresult/", "zh-hans"),
        ("15-workers-zh-hans", "/admin/django_tq/workerstate/", "zh-hans"),
        ("16-dashboard-dark", "/admin/django_tq/dashboard/", "dark"),
    ]
    workers = "/admin/django_tq/workerstate/"
    if options.live_worker:
        search = f"{workers}?q={urllib.parse.quote(options.live_worker)}"
        pages.append(("17-worker-live", first_change_url(base, session, search), "en"))
    with tempfile.TemporaryDirectory(prefix="tq-chromium-", ignore_cleanup_errors=True) as profile:
        process, url = start_chromium(Path(profile))
        try:
            page = Page(url)
            page.call("Page.enable")
            page.call("Network.enable")
            page.call("Network.setCookie", name="sessionid", value=session, url=base)
            for name, path, look in pages:  # look: a language, or "dark" (English, dark theme)
                language = "en" if look == "dark" else look
                page.call("Network.setCookie", name="django_language", value=language, url=base)
                target = options.out / f"{name}.png"
                page.screenshot(base + path, target, dark=look == "dark")
                print(f"  {target}")
            for number, action in enumerate(WORKER_ACTIONS if options.live_worker else (), 18):
                page.call("Network.setCookie", name="django_language", value="en", url=base)
                page.open(base + workers)
                page.submit(choose_action(options.live_worker, action))
                target = options.out / f"{number}-confirm-{action.removesuffix('_workers')}.png"
                page.screenshot(None, target)
                print(f"  {target}")
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
