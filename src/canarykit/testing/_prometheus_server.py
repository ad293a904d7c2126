"""A real Prometheus server for integration tests, scraping the targets a test names.

The configuration is written as JSON (which YAML, and so Prometheus, reads as is), so
every target address, label and job name is quoted by `json.dumps` rather than pasted
into YAML text; addresses and labels are still checked first, as everywhere else.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from .._safe import check_address, check_label_value, check_name
from ._processes import ManagedProcess, StartStop, find_binary, free_port, http_ok

__all__ = ["PrometheusServer"]

_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,199}")


def _duration(field: str, seconds: Any) -> str:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ConfigError(field, seconds, "must be a number of seconds")
    if not math.isfinite(seconds) or not 0.001 <= seconds <= 3600:
        raise ConfigError(field, seconds, "must be between 0.001 and 3600 seconds")
    return f"{round(seconds * 1000)}ms"


def _targets(value: Any) -> dict[str, dict[str, str]]:
    if isinstance(value, str) or not isinstance(value, (Sequence, Mapping)):
        raise ConfigError("targets", value, "must be addresses, or a mapping of address to labels")
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        items = [(address, {}) for address in value]
    targets: dict[str, dict[str, str]] = {}
    for address, labels in items:
        check_address("targets", address)
        if address.startswith("unix:"):
            raise ConfigError("targets", address, "Prometheus scrapes host:port targets only")
        if not isinstance(labels, Mapping):
            raise ConfigError(f"targets[{address!r}]", labels, "labels must be a mapping")
        clean: dict[str, str] = {}
        for name, label_value in labels.items():
            if not isinstance(name, str) or not _LABEL_NAME.fullmatch(name):
                raise ConfigError(f"targets[{address!r}]", name, "must be a label name")
            clean[name] = check_label_value(f"targets[{address!r}][{name!r}]", label_value)
        targets[address] = clean
    return targets


class PrometheusServer(StartStop):
    """Prometheus on 127.0.0.1 scraping `targets` every `scrape_interval` seconds.

    Use it as a context manager; `directory` holds its configuration, its storage and
    its log. `targets` is a list of ``host:port`` addresses, or a mapping of address to
    extra static labels for that target (``{"127.0.0.1:8001": {"track": "canary"}}``).
    All targets form one scrape job named `job`. `url` is the server's base URL.

    `wait_for_target(address)` waits until the target's first sample can be queried;
    `wait_for_query(promql)` until any query answers with at least one series.
    """

    def __init__(
        self,
        directory: Path,
        *,
        targets: Sequence[str] | Mapping[str, Mapping[str, str]],
        scrape_interval: float = 1.0,
        job: str = "app",
        port: int | None = None,
        binary: str | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.targets = _targets(targets)
        interval = _duration("scrape_interval", scrape_interval)
        self.scrape_interval = float(scrape_interval)
        self.job = check_name("job", job)
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.directory = Path(directory)
        self.config_path = self.directory / "prometheus.json"
        storage = self.directory / "prometheus-data"
        config = {
            "global": {
                "scrape_interval": interval,
                "scrape_timeout": interval,
                "evaluation_interval": interval,
            },
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "static_configs": [
                        {"targets": [address], "labels": labels}
                        for address, labels in self.targets.items()
                    ],
                }
            ],
        }
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(config, indent=2) + "\n")
        argv = [
            binary or find_binary("prometheus", "prometheus"),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={storage}",
            f"--web.listen-address={self.address}",
            "--log.level=warn",
        ]
        self._process = ManagedProcess(
            argv,
            name="prometheus",
            log_path=self.directory / "prometheus.log",
            ready=lambda: http_ok(f"{self.url}/-/ready"),
            start_timeout=start_timeout,
        )

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid

    def start(self) -> None:
        """Start Prometheus and wait until `/-/ready` answers."""
        self._process.start()

    def stop(self) -> None:
        """Stop Prometheus."""
        self._process.stop()

    def query(self, promql: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """Run an instant query and return the answer's result list (raw JSON)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.loads(response.read())
        if answer.get("status") != "success":
            raise RuntimeError(f"Prometheus refused {promql!r}: {answer.get('error')}")
        result = answer["data"]["result"]
        if answer["data"]["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def wait_for_query(self, promql: str, *, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Poll `promql` until it answers with at least one series; return that result.

        Raises TimeoutError after `timeout` seconds, quoting the end of Prometheus' log.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                result = self.query(promql)
            except (OSError, urllib.error.URLError):
                result = []
            if result:
                return result
            if time.monotonic() >= deadline:
                raise TimeoutError(
                    f"{promql!r} had no series after {timeout:g} s; Prometheus' log ends with:\n"
                    f"{self._process.log_tail()}"
                )
            time.sleep(min(0.1, self.scrape_interval / 4))

    def wait_for_target(self, address: str, *, timeout: float = 20.0) -> None:
        """Wait until Prometheus has scraped `address` successfully and can query it."""
        check_address("address", address)
        self.wait_for_query(f'up{{instance="{address}"}} == 1', timeout=timeout)

    def __repr__(self) -> str:
        return f"<PrometheusServer at {self.url} scraping {len(self.targets)} targets>"
