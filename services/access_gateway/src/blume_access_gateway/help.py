"""F1 help: the Markdown articles in ``docs/help/``, in every page locale, rendered once at
start-up.

Every page names its topic; F1 (``static/help.js``) and the visible Help link open
``/help/<topic>?lang=<the page's language>``. A page naming a topic with no article fails
the tests, not a user.

Layout: ``docs/help/<topic>.md`` is the en-CA article (the default locale) and
``docs/help/<locale>/<topic>.md`` the same topic in each other locale the pages speak
(today ``fr-CA/``). Every topic exists in every locale, or the help does not load: a French
page never falls back to an English article, and a missing translation fails the tests and
the start-up, not a reader. A link from one article to another (``/help/<topic>``) stays in
the article's language.

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

from blume_contracts.locales import DEFAULT_LOCALE, LOCALES
from markdown_it import MarkdownIt
from markdown_it.token import Token

from blume_access_gateway.settings import GatewayConfigError

TOPIC: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
INDEX_TOPIC: Final = "index"
LANGUAGE_PARAMETER: Final = "lang"
_HELP_LINK: Final = re.compile(r"^/help/([a-z0-9][a-z0-9-]{0,63})$")
_PACKAGED_HELP: Final = Path(__file__).resolve().parent / "help"
_SOURCE_TREE_HELP: Final = Path(__file__).resolve().parents[4] / "docs" / "help"


class HelpError(GatewayConfigError):
    pass


@dataclass(frozen=True, slots=True)
class Article:
    topic: str
    locale: str
    title: str
    html: str


def default_help_dir() -> Path:
    return _PACKAGED_HELP if _PACKAGED_HELP.is_dir() else _SOURCE_TREE_HELP


def help_url(topic: str, locale: str) -> str:
    """Where a page in ``locale`` sends F1 for ``topic``: the language rides along, so the
    article is in the page's language whatever the browser prefers."""
    return f"/help/{topic}?{LANGUAGE_PARAMETER}={locale[:2]}"


def locale_folder(directory: Path, locale: str) -> Path:
    """Where ``locale``'s articles are: the folder itself for the default locale."""
    return directory if locale == DEFAULT_LOCALE else directory / locale


class HelpLibrary:
    def __init__(self, articles: dict[str, dict[str, Article]]) -> None:
        """``articles``: locale -> topic -> article, the same topics in every locale."""
        if set(articles) != set(LOCALES):
            raise HelpError(f"the help must have articles in {', '.join(LOCALES)}")
        missing = [
            f"{locale}/{topic}.md"
            for topic in sorted(set().union(*articles.values()))
            for locale in LOCALES
            if topic not in articles[locale]
        ]
        if missing:
            raise HelpError(f"help articles missing: {', '.join(missing)}")
        if INDEX_TOPIC not in articles[DEFAULT_LOCALE]:
            raise HelpError(f"the help has no {INDEX_TOPIC}.md")
        self._articles = articles

    @classmethod
    def load(cls, directory: Path) -> HelpLibrary:
        return cls(
            {locale: _load_locale(locale_folder(directory, locale), locale) for locale in LOCALES}
        )

    def get(self, topic: str, locale: str) -> Article | None:
        if not TOPIC.match(topic) or locale not in self._articles:
            return None
        return self._articles[locale].get(topic)

    def has(self, topic: str) -> bool:
        return topic in self._articles[DEFAULT_LOCALE]

    def listing(self, locale: str) -> list[Article]:
        return [
            article
            for topic, article in sorted(self._articles[locale].items())
            if topic != INDEX_TOPIC
        ]


def _load_locale(folder: Path, locale: str) -> dict[str, Article]:
    # Raw HTML in an article is shown as text, never run: the CSP would block it anyway.
    renderer = MarkdownIt("commonmark", {"html": False})
    articles: dict[str, Article] = {}
    for path in sorted(folder.glob("*.md")):
        topic = path.stem
        if not TOPIC.match(topic):
            raise HelpError(f"help article name {path.name} is not a topic (a-z, 0-9, -)")
        text = path.read_text(encoding="utf-8")
        heading = next(
            (line[2:].strip() for line in text.splitlines() if line.startswith("# ")), topic
        )
        tokens = renderer.parse(text)
        _keep_links_in(locale, tokens)
        html = renderer.renderer.render(tokens, renderer.options, {})
        articles[topic] = Article(topic, locale, heading, html)
    if not articles:
        raise HelpError(f"no help articles in {folder} (set BLUME_HELP_DIR)")
    return articles


def _keep_links_in(locale: str, tokens: list[Token]) -> None:
    """Point every ``/help/<topic>`` link at the article in ``locale``."""
    for token in tokens:
        if token.children:
            _keep_links_in(locale, token.children)
        href = token.attrGet("href") if token.type == "link_open" else None
        if isinstance(href, str) and (linked := _HELP_LINK.match(href)):
            token.attrSet("href", help_url(linked.group(1), locale))
