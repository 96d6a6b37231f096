"""F1 help: the Markdown articles in ``docs/help/``, rendered once at start-up.

Every page names its topic; F1 (``static/help.js``) and the visible Help link open
``/help/<topic>``. A page naming a topic with no article fails the tests, not a user.

``docs/help`` is the one source. A built wheel carries a copy as package data
(``blume_access_gateway/help``, hatch ``force-include``), which is what an installed
package (the container image) reads; an editable checkout has no such copy and reads the
source tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from markdown_it import MarkdownIt

from blume_access_gateway.settings import GatewayConfigError

TOPIC: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
INDEX_TOPIC: Final = "index"
_PACKAGED_HELP: Final = Path(__file__).resolve().parent / "help"
_SOURCE_TREE_HELP: Final = Path(__file__).resolve().parents[4] / "docs" / "help"


class HelpError(GatewayConfigError):
    pass


@dataclass(frozen=True, slots=True)
class Article:
    topic: str
    title: str
    html: str


def default_help_dir() -> Path:
    return _PACKAGED_HELP if _PACKAGED_HELP.is_dir() else _SOURCE_TREE_HELP


class HelpLibrary:
    def __init__(self, articles: dict[str, Article]) -> None:
        if INDEX_TOPIC not in articles:
            raise HelpError(f"the help has no {INDEX_TOPIC}.md")
        self._articles = articles

    @classmethod
    def load(cls, directory: Path) -> HelpLibrary:
        # Raw HTML in an article is shown as text, never run: the CSP would block it anyway.
        renderer = MarkdownIt("commonmark", {"html": False})
        articles: dict[str, Article] = {}
        for path in sorted(directory.glob("*.md")):
            topic = path.stem
            if not TOPIC.match(topic):
                raise HelpError(f"help article name {path.name} is not a topic (a-z, 0-9, -)")
            text = path.read_text(encoding="utf-8")
            heading = next(
                (line[2:].strip() for line in text.splitlines() if line.startswith("# ")), topic
            )
            articles[topic] = Article(topic, heading, renderer.render(text))
        if not articles:
            raise HelpError(f"no help articles in {directory} (set BLUME_HELP_DIR)")
        return cls(articles)

    def get(self, topic: str) -> Article | None:
        return self._articles.get(topic) if TOPIC.match(topic) else None

    def has(self, topic: str) -> bool:
        return topic in self._articles

    def listing(self) -> list[Article]:
        return [
            article for topic, article in sorted(self._articles.items()) if topic != INDEX_TOPIC
        ]
