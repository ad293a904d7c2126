"""Real servers on loopback for integration tests: processes, proxies, stores, demo apps.

Where `canarykit.testing` holds the fakes a unit test imports, this module starts the real
thing. Every server runs in the foreground as a child process (or threads, for
`TcpProxy`), on loopback, on a free port, with its files in a directory the caller owns;
starting waits (bounded) until it answers and stopping ends it by its process id, so
nothing outlives a test. They need the binaries (``apt-get install nginx-light haproxy
prometheus etcd-server postgresql``) and the ``test`` extra; a missing binary raises
`BinaryNotFound`, which a test turns into a skip.

- `ManagedProcess`, `free_port`, `http_ok`, `find_binary`: the building blocks.
- `NginxServer`, `HAProxyServer`: a proxy in front of a stable and a canary upstream,
  driven by the real router.
- `PrometheusServer`: scrapes the targets you name; `DemoApp`: a small app exporting
  Prometheus metrics that can be told to fail; `LoadGenerator`: real traffic.
- `EtcdCluster`, `PostgresServer`: the state stores' servers; `TcpProxy`: a forwarder a
  test can cut, for network partitions.

`canarykit.testing.CanaryLab` and `canarykit.testing.ReleaseLab` put these together into
a dress rehearsal of a rollout.

>>> from canarykit.testing.lab import free_port, http_ok
>>> port = free_port()
>>> 1024 <= port < 65536
True
>>> http_ok(f"http://127.0.0.1:{port}/", timeout=0.2)
False
"""

from ._demo_app import DemoApp as DemoApp
from ._etcd_server import EtcdCluster as EtcdCluster
from ._haproxy_server import HAProxyServer as HAProxyServer
from ._load import LoadGenerator as LoadGenerator
from ._load import Response as Response
from ._nginx_server import NginxServer as NginxServer
from ._postgres_server import PostgresServer as PostgresServer
from ._processes import BinaryNotFound as BinaryNotFound
from ._processes import ManagedProcess as ManagedProcess
from ._processes import find_binary as find_binary
from ._processes import free_port as free_port
from ._processes import http_ok as http_ok
from ._prometheus_server import PrometheusServer as PrometheusServer
from ._tcp_proxy import TcpProxy as TcpProxy

__all__ = [
    "BinaryNotFound",
    "DemoApp",
    "EtcdCluster",
    "HAProxyServer",
    "LoadGenerator",
    "ManagedProcess",
    "NginxServer",
    "PostgresServer",
    "PrometheusServer",
    "Response",
    "TcpProxy",
    "find_binary",
    "free_port",
    "http_ok",
]

# Public names say they live in this module, not in the private module defining them.
from .._exports import claim_public_names as _claim_public_names

_claim_public_names(globals())
del _claim_public_names
