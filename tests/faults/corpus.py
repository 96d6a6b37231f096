"""The bad-input corpus (``tests/bad_input``, issue 8) as the suite's poison, where it exists.

The corpus is the fuller, reviewed set of hostile messages, each with the outcome it is
owed and the publisher it comes from (nobody, a broker user of no service, or the service
user itself). Where it is present the suite takes ``count`` of its cases spread over its
layers (transport, envelope, data, internal) and publishes them with the corpus's own
publisher; where it is not, ``poison.poison_cases`` is the suite's own handful. It is
looked up at run time so that the suite runs on a tree with or without it.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import itertools
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import pika  # type: ignore[import-untyped]

from tests.faults.accounts import STRANGER_USER, Accounts
from tests.faults.broker import RabbitNode
from tests.faults.poison import PoisonCase, poison_cases
from tests.faults.traffic import Bus, Outgoing, PublishRefused

CORPUS_MODULE: Final = "tests.bad_input.corpus"
PUBLISH_MODULE: Final = "tests.bad_input.publish"


def corpus_available() -> bool:
    try:
        return importlib.util.find_spec(CORPUS_MODULE) is not None
    except ModuleNotFoundError:
        return False


@dataclass(frozen=True)
class CorpusPoison:
    """Cases picked from the corpus, as the report reads them, and the corpus's own cases."""

    cases: list[PoisonCase]
    originals: list[Any]


def pick_from_corpus(count: int, tag: str) -> CorpusPoison:
    built: list[Any] = list(importlib.import_module(CORPUS_MODULE).build_corpus(tag))
    by_layer: dict[str, list[Any]] = {}
    for case in built:
        by_layer.setdefault(str(case.layer), []).append(case)
    chosen = [
        case
        for picks in itertools.zip_longest(
            *(
                _evenly(group, _share(count, len(by_layer), n))
                for n, group in enumerate(by_layer.values())
            )
        )
        for case in picks
        if case is not None
    ]
    return CorpusPoison([_as_poison(case) for case in chosen], chosen)


def _share(count: int, parts: int, index: int) -> int:
    """Part ``index`` of ``count`` split as evenly as whole numbers allow."""
    return count // parts + (1 if index < count % parts else 0)


def _evenly(cases: list[Any], wanted: int) -> list[Any]:
    """``wanted`` cases spaced evenly through ``cases`` (each layer lists its kinds in turn)."""
    if wanted >= len(cases):
        return cases
    return [cases[position * len(cases) // wanted] for position in range(wanted)]


def _as_poison(case: Any) -> PoisonCase:
    return PoisonCase(
        kind=f"{case.layer}:{case.name}",
        message=Outgoing(
            routing_key=str(case.routing_key),
            body=bytes(case.body),
            message_id=case.message_id,
            content_type=case.content_type,
            content_encoding=case.content_encoding,
            headers=dict(case.headers),
        ),
        correlation_id=case.correlation_id,
        owes_outcome=any(outcome.kind == "rejected" for outcome in case.expect),
        forged_address=_address_named(case) if case.layer == "internal" else None,
    )


def _address_named(case: Any) -> str | None:
    """The address an internal event asks us to write to (``patient_email`` and the like)."""
    try:
        data = json.loads(case.body).get("data")
    except (ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    for key, value in data.items():
        if key.endswith("email") and isinstance(value, str):
            return value.lower()
    return None


def corpus_publisher(accounts: Accounts, node: RabbitNode) -> Callable[[Iterable[Any]], str]:
    """Publish corpus cases as their producers (blocking: run it in a thread); a note.

    Nobody: the administrator's connection without a ``user_id``; a stranger: a user of no
    service; the service: the registered producer's own user (the one user in single-user
    mode). What the broker itself refuses (a topic permission) is counted, not fatal.
    """
    publish = importlib.import_module(PUBLISH_MODULE)
    producers = importlib.import_module(CORPUS_MODULE).Producer
    stranger_password = accounts.add_stranger(node)
    stranger_url = accounts.cluster.amqp_url(node, STRANGER_USER, stranger_password)

    def credentials(case: Any) -> tuple[str, str | None]:
        if case.producer == producers.STRANGER:
            return stranger_url, STRANGER_USER
        if case.producer == producers.SERVICE:
            user = accounts.producer_of(str(case.routing_key))
            return accounts.url(node, user), user
        return accounts.url(node, None), None

    def publish_all(cases: Iterable[Any]) -> str:
        channels: dict[str, Any] = {}
        connections: list[Any] = []
        refused = 0
        try:
            for case in cases:
                url, user_id = credentials(case)
                if url not in channels or channels[url].is_closed:
                    connection = pika.BlockingConnection(pika.URLParameters(url))
                    connections.append(connection)
                    channels[url] = connection.channel()
                    channels[url].confirm_delivery()
                publisher = publish.Publisher(channels[url], user_id)
                try:
                    publish.publish_case({case.producer: publisher}, case)
                except pika.exceptions.AMQPError:
                    refused += 1
        finally:
            for connection in connections:
                if connection.is_open:
                    connection.close()
        return f"{refused} refused by the broker's permissions" if refused else ""

    return publish_all


async def poison_for(
    count: int, run_tag: str, accounts: Accounts, bus: Bus
) -> tuple[list[PoisonCase], Callable[[], Awaitable[str]], str]:
    """The bad-input corpus where the tree has it (each case published as its producer),
    else the suite's own handful (published anonymously)."""
    if corpus_available():
        picked = pick_from_corpus(count, run_tag)
        publish_all = corpus_publisher(accounts, accounts.cluster.nodes[1])

        async def send_corpus() -> str:
            return await asyncio.to_thread(publish_all, picked.originals)

        return picked.cases, send_corpus, "the bad-input corpus (tests/bad_input)"
    own = poison_cases(count)

    async def send_own() -> str:
        refused = 0
        for case in own:
            try:
                await bus.publish(case.message, upstream=False)
            except PublishRefused:
                refused += 1
        return f"{refused} refused by the broker's permissions" if refused else ""

    return own, send_own, "the suite's own handful (tests/faults/poison.py)"
