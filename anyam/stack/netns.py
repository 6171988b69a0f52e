"""Each node of an embedded Kafka cluster in a network namespace of its own, so one can be cut off.

Killing or freezing a node is not what a network partition does: there the node runs on, sure it
still leads, while the others elect new leaders without it. To cut one node off from the others only,
every node gets its own namespace (`ip netns`), joined to the host by a veth pair on one bridge; the
node listens on its namespace's address, and clients on the host reach every node through the bridge.
A partition makes each side's packets for the other go to a hardware address nobody has: they vanish
silently, as behind a failed switch, while clients still reach both sides. Healing forgets it.

Needs Linux, root (or CAP_NET_ADMIN and CAP_SYS_ADMIN) and iproute2; `unavailable()` says what is
missing. Only the tests' cluster faults use it: `anyam up` keeps its nodes on loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from anyam.stack.errors import StackError

#: The block the bridges take their /24 from (10.231.<k>.0/24, k free on this host).
_SUBNET = "10.231"
#: Where the host's side of the bridge answers: clients on the host come from here.
_HOST_OCTET = 254
#: A hardware address no interface has: frames sent to it are dropped by every port of the bridge.
_NOWHERE = "02:00:00:00:00:00"


def unavailable() -> str | None:
    """Why nodes cannot be isolated on this machine, or None when they can."""
    if not shutil.which("ip"):
        return "iproute2's `ip` is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN)"
    probe = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"`ip netns` does not work here: {probe.stderr.strip()[:200]}"
    return None


def _ip(*args: str, namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    command = ["ip", *(("-n", namespace) if namespace else ()), *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise StackError(f"`{' '.join(command)}` failed: {done.stderr.strip()[:300]}")
    return done


@dataclass
class IsolatedNodes:
    """Namespaces `anyam<k>n<id>` for nodes 1..`count`, on bridge `anyamb<k>`, addresses 10.231.<k>.<id>."""

    count: int
    index: int = -1

    def create(self) -> IsolatedNodes:
        """Make the bridge, the namespaces and their links; `StackError` saying why when it cannot."""
        why = unavailable()
        if why:
            raise StackError(f"cannot isolate Kafka nodes: {why}")
        self.index = self._free_index()
        try:
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self._address(_HOST_OCTET)}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for node_id in range(1, self.count + 1):
                namespace, outside = self.namespace(node_id), self._veth(node_id)
                _ip("netns", "add", namespace)
                _ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", namespace)
                _ip("link", "set", outside, "master", self.bridge, "up")
                _ip("addr", "add", f"{self.address(node_id)}/24", "dev", "eth0", namespace=namespace)
                _ip("link", "set", "eth0", "up", namespace=namespace)
                _ip("link", "set", "lo", "up", namespace=namespace)
        except BaseException:
            self.remove()
            raise
        return self

    @property
    def bridge(self) -> str:
        return f"anyamb{self.index}"

    def namespace(self, node_id: int) -> str:
        return f"anyam{self.index}n{node_id}"

    def _veth(self, node_id: int) -> str:
        return f"anyam{self.index}v{node_id}"

    def _address(self, octet: int) -> str:
        return f"{_SUBNET}.{self.index}.{octet}"

    def address(self, node_id: int) -> str:
        """Where node `node_id` listens, reachable from the host and (unless cut off) from the other nodes."""
        return self._address(node_id)

    def command(self, node_id: int, argv: list[str]) -> list[str]:
        """`argv` run inside node `node_id`'s namespace (`ip netns exec` execs it: the pid is argv's own)."""
        return ["ip", "netns", "exec", self.namespace(node_id), *argv]

    def partition(self, node_id: int) -> None:
        """Cut node `node_id` off from every other node, both ways; clients on the host still reach all."""
        for other in self._others(node_id):
            self._route(node_id, other, cut=True)
            self._route(other, node_id, cut=True)

    def heal(self, node_id: int) -> None:
        """Undo `partition(node_id)`."""
        for other in self._others(node_id):
            self._route(node_id, other, cut=False)
            self._route(other, node_id, cut=False)

    def _others(self, node_id: int) -> Iterable[int]:
        return (other for other in range(1, self.count + 1) if other != node_id)

    def _route(self, source: int, target: int, *, cut: bool) -> None:
        # A permanent neighbour entry outranks ARP: the frames leave, addressed to nobody.
        namespace, address = self.namespace(source), self.address(target)
        if cut:
            _ip("neigh", "replace", address, "lladdr", _NOWHERE, "dev", "eth0", "nud", "permanent",
                namespace=namespace)
        else:
            _ip("neigh", "del", address, "dev", "eth0", namespace=namespace, check=False)

    def remove(self) -> None:
        """Delete the namespaces and the bridge (their links go with them); idempotent."""
        if self.index < 0:
            return
        # The links first: a namespace outlives `netns del` while sockets in it wait out TIME_WAIT, and
        # its veth pairs with it.
        for node_id in range(1, self.count + 1):
            _ip("link", "del", self._veth(node_id), check=False)
            _ip("netns", "del", self.namespace(node_id), check=False)
        _ip("link", "del", self.bridge, check=False)

    @staticmethod
    def _free_index() -> int:
        taken = _ip("-o", "addr", "show").stdout + _ip("route", "show", "table", "all").stdout
        names = set(_ip("netns", "list").stdout.split()) | {
            line.split(":")[1].strip().split("@")[0] for line in _ip("-o", "link", "show").stdout.splitlines()}
        for index in range(256):
            if (f"{_SUBNET}.{index}." not in taken and f"anyam{index}n1" not in names
                    and f"anyam{index}v1" not in names and f"anyamb{index}" not in names):
                return index
        raise StackError(f"no free {_SUBNET}.<k>.0/24 for isolated Kafka nodes")
