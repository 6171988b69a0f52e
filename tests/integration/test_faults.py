"""Faults under steady load on the whole stack, as `anyam up` runs it: broker outage, PostgreSQL restart,
each service killed. Afterwards the ledger, production and enrollment must hold exactly what was accepted.

The stack (embedded broker, embedded PostgreSQL, the three service processes) is this module's own, so
freezing, restarting and killing its parts touches no other test.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from anyam.demo.runner import StackClients, consumers_of
from anyam.reliability.faults import broker_outage, postgres_restart, service_killed
from anyam.reliability.load import SteadyLoad
from anyam.stack import stackfile as keys
from anyam.stack.lifecycle import RunningStack, start_stack
from anyam.stack.services import SERVICES
from shared.contracts import EVENT_TYPES, Topic, base_topic, topic_name
from shared.contracts.acls import ADMIN
from shared.eventstore.deadletters import DeadLetter
from shared.kafka import start_producer
from tests.kafka_reader import read_topic

RATE = 10.0  # pieces per second, each followed by its QC result; an enrolment every tenth tick


@pytest.fixture(scope="module")
async def stack(tmp_path_factory) -> AsyncIterator[RunningStack]:
    workdir = tmp_path_factory.mktemp("fault-stack")
    running = await start_stack(workdir)
    try:
        yield running
    finally:
        await asyncio.to_thread(running.stop)


@asynccontextmanager
async def steady_load(stack: RunningStack, tag: str) -> AsyncIterator[SteadyLoad]:
    clients = StackClients(stack.env)
    await clients.open()
    load = SteadyLoad(clients, tag=tag, rate=RATE)
    try:
        await load.prepare()
        load.start()
        yield load
    finally:
        await load.close()
        await clients.close()


async def accepted_more(load: SteadyLoad, command: str, *, count: int, timeout: float = 120.0) -> None:
    """Wait until `count` more `command`s have been accepted than now (the load flows again)."""
    target = load.figures.accepted_between(0, float("inf"), command) + count
    deadline = time.monotonic() + timeout
    while load.figures.accepted_between(0, float("inf"), command) < target:
        assert time.monotonic() < deadline, f"fewer than {count} more {command!r} accepted in {timeout:.0f}s"
        await asyncio.sleep(0.1)


async def assert_reconciles(load: SteadyLoad) -> None:
    reconciliation = await load.reconcile()
    # Retried answers are "try again" (503, or 409 busy), never an error of ours.
    assert set(load.figures.retried_statuses) <= {409, 503}, load.figures.retried_statuses
    assert reconciliation.pieces > 0 and reconciliation.passed > 0 and reconciliation.enrolments > 0
    assert reconciliation.exact, "\n".join(reconciliation.problems[:20])


async def test_broker_unreachable_for_30_seconds_commands_are_still_accepted_and_land_exactly_once(stack):
    async with steady_load(stack, "outage") as load:
        await accepted_more(load, "production POST /pieces", count=20)
        outage = await broker_outage(stack, 30.0)
        during = load.figures.accepted_between(outage.began, outage.ended, "production POST /pieces")
        # The outbox holds them: staff kept recording pieces while no event could reach the broker.
        assert during >= 0.5 * RATE * (outage.ended - outage.began), f"only {during} pieces accepted in the outage"
        await accepted_more(load, "publish to qc-submissions", count=20)  # collaborators get through again
        await load.stop()
        await assert_reconciles(load)


async def test_postgresql_restarted_under_load_services_reconnect_by_themselves_and_lose_nothing(stack):
    pids = {name: service.pid for name, service in stack.services.items()}
    old_postgres = stack.postgres.pid
    async with steady_load(stack, "pg-restart") as load:
        await accepted_more(load, "production POST /pieces", count=20)
        await postgres_restart(stack)  # returns once every service reports its database ok again
        await accepted_more(load, "production POST /pieces", count=20)
        await load.stop()
        await assert_reconciles(load)
    assert stack.postgres.pid != old_postgres
    assert {name: service.pid for name, service in stack.services.items()} == pids, "a service was restarted"


async def test_each_service_killed_with_sigkill_under_load_and_restarted_the_ledger_is_exact(stack):
    async with steady_load(stack, "sigkill") as load:
        for spec in SERVICES:
            await accepted_more(load, "production POST /pieces", count=15)
            await service_killed(spec.name)(stack)
        await accepted_more(load, "production POST /pieces", count=15)
        await load.stop()
        assert load.figures.retries > 0, "no command ever met a dead service: the kills were not under load"
        await assert_reconciles(load)


# --- poison on every consumed topic ------------------------------------------------------------------


def poison_records(topic: Topic) -> dict[str, tuple[str, bytes]]:
    """Five kinds of hostile record for `topic`: kind -> (expected dead-letter reason, value)."""
    model = next(m for m in EVENT_TYPES.values() if m.topic is topic)
    envelope = {"specversion": "1.0", "id": f"poison-{uuid.uuid4().hex}", "source": "/poison", "type": model.event_type,
                "time": "2024-03-01T09:00:00+07:00", "datacontenttype": "application/json", "dataversion": 1}
    fields = list(model.model_fields)

    def event(**changes) -> bytes:
        return json.dumps(envelope | {"id": f"poison-{uuid.uuid4().hex}"} | changes).encode()

    return {
        "not JSON": ("malformed", b"\xff\xfe not json at all { " + topic.encode()),
        "wrong envelope": ("wrong-specversion", event(specversion="0.3", data={})),
        "unknown type": ("unknown-type", event(type="piece-teleported", data={})),
        "field of the wrong type": ("schema-invalid", event(data={name: [1, 2] for name in fields})),
        "huge value": ("schema-invalid", event(data={fields[0]: "x" * 600_000})),
    }


async def test_poison_on_every_consumed_topic_is_dead_lettered_with_its_reason_and_no_consumer_stops(stack):
    clients = StackClients(stack.env)
    await clients.open()
    # Poison can come from anyone who may write a topic; here it is written as the cluster's admin, who may
    # write every topic (test_broker_acls.py shows who else may not).
    admin = keys.principal_kafka_settings(stack.env, ADMIN)
    producer = await start_producer(admin)
    consumers = consumers_of(clients.kafka.topic_prefix)
    consumed = sorted({topic for _, _, topics in consumers for topic in topics})
    sent: dict[bytes, tuple[Topic, str]] = {}  # value -> (topic, expected reason)
    try:
        for topic in consumed:
            for kind, (reason, value) in poison_records(topic).items():
                await producer.send_and_wait(topic_name(topic, clients.kafka.topic_prefix), value,
                                             key=f"poison-{kind}".encode())
                sent[value] = (topic, reason)
        # Caught up on every consumer means each moved past all the poison: none stopped, none loops.
        await clients.settle(consumers, timeout=120)
        letters = [DeadLetter.from_record(r.key, r.value, r.headers)
                   for r in await read_topic(admin, topic_name(Topic.DEAD_LETTERS, clients.kafka.topic_prefix))]
    finally:
        await producer.stop()
        await clients.close()

    got = sorted((letter.consumer, base_topic(letter.source_topic, clients.kafka.topic_prefix), letter.reason)
                 for letter in letters if letter.value in sent)
    expected = sorted((name, topic, reason) for _, name, topics in consumers for topic in topics
                      for value, (poisoned, reason) in sent.items() if poisoned is topic)
    assert got == expected  # each poison record exactly once per consumer that reads it, with its reason
