"""Where a rollout's state and lease live: on this host, or on an engine several hosts share.

- `FileStore` / `FileLease`: one JSON file per key in a private directory, and a lease
  on a lock file beside it (one host; the default of ``canarykit run``).
- `MemoryStore` / `MemoryLease`: in this process (tests, and programs that keep the
  state themselves).
- `EtcdStore` / `EtcdLease`: under a key prefix of an etcd v3 cluster, with the lease an
  etcd lease; writes are fenced by the lease's token (``pip install canarykit[etcd]``).
- `PostgresStore` / `PostgresLease`: in a PostgreSQL table, with the lease a row with an
  expiry and a fencing counter (``pip install canarykit[postgres]``).
- `KubernetesLease`: a lease only, held as a ``coordination.k8s.io/v1`` Lease the way
  client-go's leader election holds it; fenced by the check before each apply (the state
  lives in another store) (``pip install canarykit[kubernetes]``).

A store's ``lease(key)`` gives the lease `canarykit.Rollout` takes by default.
"""

from typing import TYPE_CHECKING, Any

from .._exports import claim_public_names as _claim_public_names
from .._exports import load_lazy as _load_lazy
from .._lease import FileLease as FileLease
from .._lease import MemoryLease as MemoryLease
from .._stores import FileStore as FileStore
from .._stores import MemoryStore as MemoryStore

__all__ = [
    "EtcdLease",
    "EtcdStore",
    "FileLease",
    "FileStore",
    "KubernetesLease",
    "MemoryLease",
    "MemoryStore",
    "PostgresLease",
    "PostgresStore",
]

if TYPE_CHECKING:
    from ._etcd import EtcdLease as EtcdLease
    from ._etcd import EtcdStore as EtcdStore
    from ._kubernetes import KubernetesLease as KubernetesLease
    from ._postgres import PostgresLease as PostgresLease
    from ._postgres import PostgresStore as PostgresStore

# The engines' clients load on first use (PEP 562).
_LAZY = {
    "EtcdLease": "._etcd",
    "EtcdStore": "._etcd",
    "KubernetesLease": "._kubernetes",
    "PostgresLease": "._postgres",
    "PostgresStore": "._postgres",
}


def __getattr__(name: str) -> Any:
    return _load_lazy(globals(), _LAZY, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


_claim_public_names({**globals(), "__all__": [n for n in __all__ if n not in _LAZY]})
