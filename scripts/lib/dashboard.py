"""The Grafana dashboard of ``docs/grafana/django_tq.json`` outside Grafana: its panels and their
PromQL, a Prometheus server to run them on, and its HTTP API (standard library only).

Used by the test that evaluates every query of the dashboard on a real Prometheus
(``tests/observability/test_dashboard.py``) and by ``scripts/render_dashboard``, which draws the
same queries into the picture of ``docs/observability.md``.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
DASHBOARD = ROOT / "docs" / "grafana" / "django_tq.json"
SCALED_OBJECT = ROOT / "docs" / "kubernetes" / "keda-scaledobject.yaml"
#: what Grafana puts in for its built-in ``$__rate_interval`` when none is given
RATE_INTERVAL = "1m"


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """One query of a panel."""

    expr: str  #: PromQL as written in the dashboard (with ``$variables``)
    legend: str  #: Grafana's ``legendFormat`` (``{{label}}`` placeholders)

    def promql(self, *, rate_interval: str = RATE_INTERVAL, **variables: str) -> str:
        """Return the query with the dashboard's variables filled in (``All`` by default)."""
        return expand(self.expr, rate_interval=rate_interval, **variables)

    def label(self, metric: dict[str, str]) -> str:
        """Return the legend of a series with these labels."""
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), self.legend)


@dataclass(frozen=True, kw_only=True, slots=True)
class Panel:
    """One panel: a title, the unit of its axis, its queries."""

    title: str
    unit: str
    targets: tuple[Target, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class Dashboard:
    """The panels of a dashboard and the "All" value of each of its query variables."""

    title: str
    panels: tuple[Panel, ...]
    variables: dict[str, str] = field(default_factory=dict)


def load(path: Path = DASHBOARD) -> Dashboard:
    """Read a Grafana dashboard JSON (a ValueError names what is missing)."""
    data = json.loads(path.read_text())
    panels = []
    for number, raw in enumerate(data.get("panels", []), start=1):
        targets = tuple(
            Target(expr=target["expr"], legend=target.get("legendFormat", ""))
            for target in raw.get("targets", [])
        )
        if not targets:
            raise ValueError(f"{path}: panel {number} ({raw.get('title')!r}) has no query")
        unit = raw.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        panels.append(Panel(title=raw["title"], unit=unit, targets=targets))
    variables = {
        item["name"]: item.get("allValue") or ".*"
        for item in data.get("templating", {}).get("list", [])
        if item.get("type") == "query"
    }
    return Dashboard(title=data.get("title", path.stem), panels=tuple(panels), variables=variables)


def expand(expr: str, *, rate_interval: str = RATE_INTERVAL, **variables: str) -> str:
    """Fill in Grafana's ``$__rate_interval`` and the dashboard's ``$name`` / ``${name}``.

    A variable left in the query after that is an error: Prometheus would reject it anyway.
    """
    values = {"__rate_interval": rate_interval, **variables}
    expanded = re.sub(
        r"\$\{(\w+)\}|\$(\w+)",
        lambda m: values.get(m.group(1) or m.group(2), m.group(0)),
        expr,
    )
    left = re.search(r"\$\{?\w+", expanded)
    if left:
        raise ValueError(f"no value for {left.group(0)} in {expr!r}")
    return expanded


def scaler_queries(path: Path = SCALED_OBJECT) -> list[str]:
    """Return the PromQL of every Prometheus trigger of a KEDA ``ScaledObject`` manifest."""
    found = re.findall(r"^\s*query:\s*(.+?)\s*$", path.read_text(), flags=re.MULTILINE)
    if not found:
        raise ValueError(f"{path}: no Prometheus trigger query")
    return found


# -- the HTTP API -----------------------------------------------------------------------------------
class PrometheusError(Exception):
    """Prometheus refused a query (its message says why)."""


def _api(base_url: str, endpoint: str, params: dict[str, Any]) -> Any:
    url = f"{base_url.rstrip('/')}/api/v1/{endpoint}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:  # a bad query: 400 with a JSON error
        body = json.loads(exc.read() or b"{}")
    if body.get("status") != "success":
        raise PrometheusError(f"{params.get('query')!r}: {body.get('error', body)}")
    return body["data"]


def query(base_url: str, promql: str, at: float | None = None) -> list[dict[str, Any]]:
    """Evaluate ``promql`` at ``at`` (now by default); return the series of the instant vector."""
    params: dict[str, Any] = {"query": promql}
    if at is not None:
        params["time"] = f"{at:.3f}"
    data = _api(base_url, "query", params)
    if data["resultType"] != "vector":
        raise PrometheusError(f"{promql!r} is a {data['resultType']}, not an instant vector")
    return list(data["result"])


def query_range(
    base_url: str, promql: str, *, start: float, end: float, step: float
) -> list[dict[str, Any]]:
    """Evaluate ``promql`` from ``start`` to ``end``; each series has ``values`` [[t, "v"], ...]."""
    params = {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"}
    return list(_api(base_url, "query_range", params)["result"])


def finite(series: dict[str, Any]) -> list[float]:
    """Return the finite values of a series of ``query`` or ``query_range``."""
    pairs = series.get("values") or [series["value"]]
    values = [float(value) for _, value in pairs]
    return [value for value in values if math.isfinite(value)]


# -- a server -----------------------------------------------------------------------------------------
def binary() -> str | None:
    """Return the path of the ``prometheus`` binary (Debian's ``prometheus`` package), if any."""
    return shutil.which("prometheus")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, kw_only=True, slots=True)
class ScrapeJob:
    """A scrape job: ``host:port`` targets, a path, and a bearer token if the target needs one."""

    name: str
    targets: tuple[str, ...]
    path: str = "/metrics"
    token: str | None = None

    def config(self, directory: Path) -> dict[str, Any]:
        job: dict[str, Any] = {
            "job_name": self.name,
            "metrics_path": self.path,
            "static_configs": [{"targets": list(self.targets)}],
        }
        if self.token is not None:
            token_file = directory / f"{self.name}.token"
            token_file.write_text(self.token)
            job["authorization"] = {"credentials_file": str(token_file)}
        return job


@contextlib.contextmanager
def prometheus_server(
    jobs: list[ScrapeJob], *, scrape_interval: str = "1s", timeout: float = 30.0
) -> Iterator[str]:
    """Run a Prometheus server on a free port of 127.0.0.1 scraping ``jobs``; yield its URL.

    Its configuration and storage live in a temporary directory removed afterwards (the
    configuration is JSON, which Prometheus reads as YAML). Raises FileNotFoundError without the
    binary, RuntimeError (with its log) if it does not become ready in ``timeout`` seconds.
    """
    path = binary()
    if path is None:
        raise FileNotFoundError("prometheus is not installed (Debian package prometheus)")
    with tempfile.TemporaryDirectory(prefix="tq-prometheus-") as scratch:
        directory = Path(scratch)
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
            "scrape_configs": [job.config(directory) for job in jobs],
        }
        (directory / "prometheus.yml").write_text(json.dumps(config, indent=2))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = (directory / "prometheus.log").open("wb")
        process = subprocess.Popen(
            [
                path,
                f"--config.file={directory / 'prometheus.yml'}",
                f"--storage.tsdb.path={directory / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            _wait_ready(url, process, timeout, directory / "prometheus.log")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
            log.close()


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"Prometheus did not become ready:\n{log.read_text(errors='replace')}")
