"""Faults injected into a running embedded stack, each returning once the stack has recovered.

A fault's report says how long the stack took to answer healthily again: the
services are never told about a fault, they must notice and recover alone
(except a killed process, which is restarted as an orchestrator would).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from anyam.stack.errors import StackError
from anyam.stack.kafka_cluster import KafkaCluster
from anyam.stack.lifecycle import RunningStack
from anyam.stack.services import SERVICES


class NotRecovered(Exception):
    """The stack did not answer healthily again in time after a fault."""


@dataclass(frozen=True)
class FaultReport:
    """One fault: what it was, when (monotonic seconds) it began and ended, and when all was healthy again."""

    name: str
    began: float
    ended: float
    healthy_again: float

    @property
    def recovery_seconds(self) -> float:
        """From the end of the fault to every service answering healthily."""
        return self.healthy_again - self.ended


async def wait_until_healthy(stack: RunningStack, timeout: float = 120.0) -> float:
    """Poll every service's `/health` until all answer 200 (database and every component ok); returns when."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as http:
        while True:
            answers: list[int | None] = []
            for service in stack.services.values():
                try:
                    answers.append((await http.get(f"{service.url}/health")).status_code)
                except httpx.TransportError:
                    answers.append(None)
            if all(code == 200 for code in answers):
                return time.monotonic()
            if time.monotonic() > deadline:
                unhealthy = [name for (name, _), code in zip(stack.services.items(), answers, strict=True)
                             if code != 200]
                raise NotRecovered(f"still unhealthy {timeout:.0f}s after the fault: {', '.join(unhealthy)}")
            await asyncio.sleep(0.2)


async def broker_outage(stack: RunningStack, seconds: float = 30.0) -> FaultReport:
    """Freeze the broker (SIGSTOP) for `seconds`: every connection to it hangs, and nothing it held is lost."""
    return await _for_a_while(stack, f"broker unreachable for {seconds:.0f}s", seconds,
                              begin=stack.broker.freeze, end=stack.broker.thaw)


def cluster_of(stack: RunningStack) -> KafkaCluster:
    """The stack's Apache Kafka cluster; cluster faults need one."""
    if not isinstance(stack.broker, KafkaCluster):
        raise StackError(f"a cluster fault needs the stack to run Apache Kafka, not {stack.broker.kind}")
    return stack.broker


async def broker_node_killed(stack: RunningStack, node_id: int, *, down_for: float = 0.0) -> FaultReport:
    """SIGKILL one Kafka node (its leaderships move to the others), start it again `down_for` s later."""
    cluster = cluster_of(stack)
    began = time.monotonic()
    cluster.kill_node(node_id)
    await asyncio.sleep(down_for)  # the length of the fault itself
    await cluster.start_node(node_id)
    ended = time.monotonic()
    return FaultReport(f"Kafka node {node_id} killed (SIGKILL)", began, ended, await wait_until_healthy(stack))


async def broker_nodes_stopped(stack: RunningStack, node_ids: list[int], seconds: float = 30.0) -> FaultReport:
    """Shut Kafka nodes down in order for `seconds`, then start them again. Two of three leave every
    partition below `min.insync.replicas`: producers with acks=all are refused until they return."""
    cluster = cluster_of(stack)
    began = time.monotonic()
    for node_id in node_ids:
        await asyncio.to_thread(cluster.stop_node, node_id)
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - began)))  # the length of the fault itself
    for node_id in node_ids:
        cluster.start_node_process(node_id)
    await cluster.wait_ready()
    ended = time.monotonic()
    names = ", ".join(map(str, node_ids))
    return FaultReport(f"Kafka node(s) {names} stopped for {seconds:.0f}s", began, ended,
                       await wait_until_healthy(stack))


async def broker_node_frozen(stack: RunningStack, node_id: int, seconds: float = 30.0) -> FaultReport:
    """SIGSTOP one Kafka node for `seconds`: its connections hang rather than close, as behind a network
    partition, until the others fence it and its clients give up on it."""
    cluster = cluster_of(stack)
    return await _for_a_while(stack, f"Kafka node {node_id} frozen (SIGSTOP) for {seconds:.0f}s", seconds,
                              begin=lambda: cluster.freeze_node(node_id), end=lambda: cluster.thaw_node(node_id))


async def broker_node_partitioned(stack: RunningStack, node_id: int, seconds: float = 30.0) -> FaultReport:
    """Cut one Kafka node off from the other two for `seconds` (the stack's nodes isolated, anyam/stack/netns.py):
    it runs on and clients still reach it, while the others fence it and elect leaders without it."""
    cluster = cluster_of(stack)
    return await _for_a_while(stack, f"Kafka node {node_id} cut off from the others for {seconds:.0f}s", seconds,
                              begin=lambda: cluster.partition_node(node_id), end=lambda: cluster.heal_node(node_id))


async def _for_a_while(
    stack: RunningStack, name: str, seconds: float, *, begin: Callable[[], None], end: Callable[[], None],
) -> FaultReport:
    """`begin` a fault, undo it with `end` `seconds` later (however the wait ends), then wait for health."""
    began = time.monotonic()
    begin()
    try:
        await asyncio.sleep(seconds)  # the length of the fault itself
    finally:
        end()
    ended = time.monotonic()
    return FaultReport(name, began, ended, await wait_until_healthy(stack))


async def postgres_restart(stack: RunningStack) -> FaultReport:
    """Restart PostgreSQL (fast shutdown: open transactions roll back, connections drop)."""
    began = time.monotonic()
    await stack.restart_postgres()
    ended = time.monotonic()
    return FaultReport("PostgreSQL restarted", began, ended, await wait_until_healthy(stack))


def service_killed(name: str) -> Callable[[RunningStack], Awaitable[FaultReport]]:
    """SIGKILL service `name` and start it again on the same port, as a supervisor would."""

    async def inject(stack: RunningStack) -> FaultReport:
        began = time.monotonic()
        await stack.relaunch_service(name)
        ended = time.monotonic()
        return FaultReport(f"{name} killed (SIGKILL) and restarted", began, ended, await wait_until_healthy(stack))

    return inject


#: Every fault the soak cycles through, in order.
FAULTS: tuple[Callable[[RunningStack], Awaitable[FaultReport]], ...] = (
    lambda stack: broker_outage(stack, 30.0),
    postgres_restart,
    *(service_killed(spec.name) for spec in SERVICES),
)
