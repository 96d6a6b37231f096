"""The bad-input corpus (``tests/bad_input``, issue 8) as the suite's poison, where it exists.

The corpus is the fuller, reviewed set of hostile messages, each with the outcome it is
owed and the publisher it comes from (nobody, a broker user of no service, or the service
user itself). Where it is present the suite takes ``count`` of its cases spread over its
layers (transport, envelope, data, internal) and publishes them with the corpus's own
publisher; where it is not, ``poison.poison_cases`` is the suite's own handful. It is
looked up at run time so that the suite runs on a tree with or without it.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

import pika  # type: ignore[import-untyped]

from tests.faults.poison import PoisonCase
from tests.faults.traffic import Outgoing

CORPUS_MODULE: Final = "tests.bad_input.corpus"
PUBLISH_MODULE: Final = "tests.bad_input.publish"
STRANGER_USER: Final = "blume-chaos-stranger"


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


def corpus_publisher(
    service_url: str, stranger_url: str, service_user: str
) -> Callable[[Iterable[Any]], None]:
    """Publish corpus cases as their producers (blocking: run it in a thread)."""
    publish = importlib.import_module(PUBLISH_MODULE)
    producers = importlib.import_module(CORPUS_MODULE).Producer

    def publish_all(cases: Iterable[Any]) -> None:
        own = pika.BlockingConnection(pika.URLParameters(service_url))
        intruder = pika.BlockingConnection(pika.URLParameters(stranger_url))
        try:
            own_channel, intruder_channel = own.channel(), intruder.channel()
            own_channel.confirm_delivery()
            intruder_channel.confirm_delivery()
            publishers = {
                producers.ANONYMOUS: publish.Publisher(own_channel, None),
                producers.SERVICE: publish.Publisher(own_channel, service_user),
                producers.STRANGER: publish.Publisher(intruder_channel, STRANGER_USER),
            }
            for case in cases:
                publish.publish_case(publishers, case)
        finally:
            own.close()
            intruder.close()

    return publish_all
