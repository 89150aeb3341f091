"""Several hosts on one machine, for faults between them: network namespaces joined by a bridge.

A :class:`Network` is a namespace holding a bridge (the switch), and one namespace per host —
the database host, the broker host, the worker hosts — each joined to the bridge by a veth pair;
the test process itself is a host too (the root namespace's end of one more veth pair), so it
reaches the servers it starts on the other hosts.
Addresses are in ``10.213.N.0/24``, with ``N`` picked so that no route of this machine uses it:
nothing outside this machine's own namespaces is ever contacted.

Faults, per host:

* :meth:`Network.partition` / :meth:`Network.heal` — the switch's end of the host's link goes
  down (a silent partition: the host's packets leave, nothing comes back, nothing is refused);
* :meth:`Network.lose` — a share of the host's outgoing packets is dropped (nftables' random
  number generator, in the host's namespace); ``tc netem`` is not needed, and this kernel has
  none (``CONFIG_NET_SCH_NETEM`` is not set);
* latency: ``tc netem`` is the tool for that, and this kernel lacks it; a :class:`Relay` on the
  server's host (``tests/faults/relay.py``, run with ``ip netns exec``) delays every chunk by a
  set time in each direction, in order, and the workers reach the server through it. It adds
  latency to the byte stream, not to each packet: TCP's own retransmissions (of the packets
  :meth:`Network.lose` drops) still run at the link's speed, which is what a real lossy, slow link
  costs too, plus the relay's delay once.

Everything needs root (``ip netns``); :func:`require_root` skips otherwise (fails under
``TQ_REQUIRE_SERVICES=1``). :meth:`Network.destroy` removes every namespace and link it made,
also after a failed test.
"""

from __future__ import annotations

import ipaddress
import os
import random
import shutil
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REQUIRE_SERVICES
from tests.faults.conftest import Service


def require_root() -> None:
    """Skip (or fail under TQ_REQUIRE_SERVICES=1) where namespaces cannot be made."""
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    reason = ""
    if os.geteuid() != 0:
        reason = "network namespaces need root"
    elif missing:
        reason = f"{', '.join(missing)} not installed (Debian iproute2, nftables)"
    if reason:
        if REQUIRE_SERVICES:
            pytest.fail(reason + " (TQ_REQUIRE_SERVICES=1)")
        pytest.skip(reason)


def run(*command: str) -> str:
    """Run one ``ip``/``nft`` command; fail with its error output."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} failed: {done.stderr.strip()}")
    return done.stdout


def _free_subnet() -> ipaddress.IPv4Network:
    routes = run("ip", "-4", "route", "show", "table", "all")
    for _ in range(100):
        subnet = ipaddress.IPv4Network(f"10.213.{random.randrange(1, 255)}.0/24")
        if str(subnet.network_address)[:-1] not in routes:
            return subnet
    raise AssertionError("no free 10.213.N.0/24 subnet")


@dataclass(frozen=True, slots=True)
class Host:
    """One host of a :class:`Network`: a namespace (``None``: the test process's own)."""

    name: str
    namespace: str | None
    address: str
    #: the switch's end of this host's link (what a partition takes down)
    bridge_port: str

    def prefix(self) -> list[str]:
        """The command prefix that runs a program on this host."""
        return [] if self.namespace is None else ["ip", "netns", "exec", self.namespace]


class Network:
    """Hosts on one bridge (see the module docstring)."""

    def __init__(self) -> None:
        require_root()
        self.tag = uuid.uuid4().hex[:5]
        self.subnet = _free_subnet()
        addresses = list(self.subnet.hosts())
        self._next_address = iter(addresses[9:])  # .10, .11, ...: the hosts
        self.switch = f"tq{self.tag}s"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._root_links: list[str] = []
        try:
            self._add_namespace(self.switch)
            run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
            run("ip", "-n", self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.destroy()
            raise

    def _add_namespace(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self._namespaces.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def add_host(self, name: str, *, namespace: bool = True) -> Host:
        """Add a host (``namespace=False``: the test process's own) joined to the bridge."""
        index = len(self.hosts)
        port, end = f"tq{self.tag}p{index}", f"tq{self.tag}h{index}"
        address = str(next(self._next_address))
        run("ip", "link", "add", end, "type", "veth", "peer", "name", port)
        ns = f"tq{self.tag}{name}"[:15] if namespace else None
        if ns is None:
            self._root_links.append(end)
        else:
            self._add_namespace(ns)
            run("ip", "link", "set", end, "netns", ns)
        run("ip", "link", "set", port, "netns", self.switch)
        run("ip", "-n", self.switch, "link", "set", port, "master", "br0")
        run("ip", "-n", self.switch, "link", "set", port, "up")
        on_host = ["ip"] if ns is None else ["ip", "-n", ns]
        run(*on_host, "addr", "add", f"{address}/24", "dev", end)
        run(*on_host, "link", "set", end, "up")
        host = Host(name=name, namespace=ns, address=address, bridge_port=port)
        self.hosts[name] = host
        return host

    # -- faults ---------------------------------------------------------------------------------
    def partition(self, host: Host) -> None:
        """Cut ``host`` off silently: its packets leave, nothing reaches it, nothing is refused."""
        run("ip", "-n", self.switch, "link", "set", host.bridge_port, "down")

    def heal(self, host: Host) -> None:
        """Join ``host`` to the bridge again."""
        run("ip", "-n", self.switch, "link", "set", host.bridge_port, "up")

    def lose(self, host: Host, percent: int) -> None:
        """Drop ``percent`` % of the packets ``host`` sends (0: stop dropping)."""
        assert host.namespace is not None, "faults are for the namespaced hosts"
        nft = ["ip", "netns", "exec", host.namespace, "nft"]
        subprocess.run([*nft, "delete", "table", "inet", "tqloss"], capture_output=True)
        if percent:
            run(*nft, "add", "table", "inet", "tqloss")
            run(*nft, "add", "chain", "inet", "tqloss", "out",
                "{ type filter hook output priority 0; }")  # fmt: skip
            run(*nft, "add", "rule", "inet", "tqloss", "out", "oifname", "!=", "lo",
                "numgen", "random", "mod", "100", "<", str(percent), "drop")  # fmt: skip

    def destroy(self) -> None:
        """Remove every namespace and root-namespace link this network made."""
        for link in self._root_links:
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        for namespace in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
        self._root_links.clear()
        self._namespaces.clear()


class Relay(Service):
    """A latency relay on ``host`` in front of a server listening on the host's own address.

    ``Relay(directory, server, delay=0.05, ...)``: clients connect to the relay's ``host:port``
    and reach ``server``'s port there ``delay`` seconds later each way (``tests/faults/relay.py``).
    """

    name = "relay"

    def __init__(self, directory: Path, server: Service, *, delay: float, host: Host) -> None:
        super().__init__(directory, host=host.address, prefix=host.prefix())
        self.server = server
        self.delay = delay

    def command(self) -> list[str]:
        script = Path(__file__).with_name("relay.py")
        server = (self.server.host, str(self.server.port))
        return [sys.executable, str(script), self.host, str(self.port), *server, str(self.delay)]
