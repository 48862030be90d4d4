"""One run's network allowlist, put together for the bubblewrap backend: the proxy is
started before the sandbox and closed when the run ends, whatever happens (this is a
context manager used by capataz.sandbox.bwrap around the whole run)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from capataz.sandbox.mounts import secret_pipes
from capataz.sandbox.network.bridge import BridgePlan, find_python, plan_bridge
from capataz.sandbox.network.policy import ConnectionRecord, NetworkPolicy

if TYPE_CHECKING:
    from capataz.sandbox.network.proxy import NetworkProxy

__all__ = ["NetworkSetup", "network_for"]


@dataclass(frozen=True)
class NetworkSetup:
    """What the bwrap command line, the init script and the environment need."""

    plan: BridgePlan
    proxy: NetworkProxy
    fds: list[int]  # read ends bwrap copies into the sandbox (the generated /etc/hosts)

    def bwrap_args(self) -> list[str]:
        """The proxy's socket (the file alone, never its directory) at the bridge's
        path, and the generated /etc/hosts when exact names get addresses."""
        argv = ["--ro-bind", str(self.proxy.socket_path), self.plan.socket]
        if self.fds:
            argv += ["--perms", "0644", "--ro-bind-data", str(self.fds[0]), "/etc/hosts"]
        return argv

    @property
    def records(self) -> list[ConnectionRecord]:
        return list(self.proxy.records)


@contextmanager
def network_for(
    network: bool | NetworkPolicy,
    *,
    uid: int | None,
    hidden: Sequence[Path] = (),
    on_record: Callable[[ConnectionRecord], None] | None = None,
) -> Iterator[NetworkSetup | None]:
    """The proxy and bridge plan for ``network`` when it is an allowlist (None for
    ``True``/``False``); the proxy is closed on the way out."""
    if not isinstance(network, NetworkPolicy):
        yield None
        return
    from capataz.sandbox.network.proxy import NetworkProxy  # asyncio: only when needed

    plan = plan_bridge(network, uid=uid, python=find_python(hidden))
    hosts = {"hosts": plan.hosts} if plan.hosts is not None else {}
    with (
        NetworkProxy(network, owner=uid, on_record=on_record) as proxy,
        secret_pipes(hosts) as fds,
    ):
        yield NetworkSetup(plan, proxy, [fd for _, fd in fds])
