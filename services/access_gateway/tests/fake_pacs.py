"""A stand-in PACS behind the gateway's own port (``dicomweb.PacsHttp``): route tests
answer the viewer's GETs in process, and see what it asked for and whether it closed
every answer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

from multidict import CIMultiDict, CIMultiDictProxy

CHUNK = 16
"""The stand-in's bodies arrive in pieces this small, as a PACS's stream would."""


@dataclass
class FakeAnswer:
    status: int
    body: bytes = b""
    header_items: Mapping[str, str] = field(default_factory=dict)
    closed: bool = False

    @property
    def headers(self) -> Mapping[str, str]:
        return CIMultiDictProxy(CIMultiDict(self.header_items))

    async def read(self) -> bytes:
        return self.body

    async def chunks(self) -> AsyncIterator[bytes]:
        for start in range(0, len(self.body), CHUNK):
            yield self.body[start : start + CHUNK]

    def close(self) -> None:
        self.closed = True


Answering = Callable[[str, Mapping[str, str]], FakeAnswer]
"""URL and headers of a GET to its answer; raises ``PacsError`` for a PACS out of reach."""


@dataclass
class FakePacs:
    answering: Answering
    asked: list[str] = field(default_factory=list)
    answers: list[FakeAnswer] = field(default_factory=list)

    async def get(self, url: str, headers: Mapping[str, str]) -> FakeAnswer:
        self.asked.append(url)
        answer = self.answering(url, headers)
        self.answers.append(answer)
        return answer

    async def aclose(self) -> None:
        return None
