"""F1 help: every page names a topic that has an article in docs/help/, links to it visibly,
and loads the script that opens it on F1; /help/<topic> serves the article."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from blume_access_gateway.help import HelpError, HelpLibrary
from blume_access_gateway.views import ALL_TOPICS

from services.access_gateway.tests.conftest import REPO, Harness

TOPIC = re.compile(r'<body data-help-topic="([a-z0-9-]+)">')


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_every_page_topic_has_an_article(harness: Harness, topic: str) -> None:
    """Each topic a page can name is served at /help/<topic> with its article."""
    with harness.client() as client:
        article = client.get(f"/help/{topic}")
    assert article.status_code == 200
    assert f'data-help-article="{topic}"' in article.text


def test_every_article_in_docs_help_is_reachable_from_a_page_or_the_index() -> None:
    """No orphan articles: each docs/help/*.md is some page's topic."""
    on_disk = {path.stem for path in (REPO / "docs" / "help").glob("*.md")}
    assert on_disk == set(ALL_TOPICS)


def test_pages_name_their_topic_link_it_and_load_the_f1_script(harness: Harness) -> None:
    """Link page, code page, expired page, 404, help page: topic, Help link, help.js."""
    token, _link = harness.add_link()
    expired, _old = harness.add_link(expires_in=timedelta(seconds=-1))
    expectations = {
        f"/s/{token}": "link-page",
        f"/s/{expired}": "link-unavailable",
        "/s/unknown-token": "link-not-found",
        "/help/sign-in-code": "index",
        "/no-such-page": "link-not-found",
    }
    with harness.client() as client:
        for path, topic in expectations.items():
            page = client.get(path).text
            named = TOPIC.search(page)
            assert named is not None, path
            assert named.group(1) == topic, path
            assert f'href="/help/{topic}" target="_blank"' in page, path
            assert '<script src="/static/help.js" defer></script>' in page, path


def test_the_f1_script_opens_the_topic_in_a_new_window(harness: Harness) -> None:
    """help.js listens for F1, prevents the browser's own help, opens /help/<topic>."""
    with harness.client() as client:
        script = client.get("/static/help.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert 'event.key !== "F1"' in script.text
    assert "preventDefault" in script.text
    assert "window.open(" in script.text


def test_unknown_topics_are_404(harness: Harness) -> None:
    """/help/<anything else> is a 404 page, including attempts at paths."""
    with harness.client() as client:
        assert client.get("/help/no-such-topic").status_code == 404
        assert client.get("/help/..%2Fsecrets").status_code == 404


def test_raw_html_in_an_article_is_shown_as_text(tmp_path: Path) -> None:
    """Articles are Markdown: HTML in them is escaped, never run."""
    (tmp_path / "index.md").write_text("# Help\n\n<script>alert(1)</script>\n")
    library = HelpLibrary.load(tmp_path)
    article = library.get("index")
    assert article is not None
    assert "<script>" not in article.html
    assert "&lt;script&gt;" in article.html


def test_help_without_an_index_refuses_to_start(tmp_path: Path) -> None:
    """A help folder with no index.md is a configuration error, at start-up."""
    (tmp_path / "link-page.md").write_text("# Link\n")
    with pytest.raises(HelpError):
        HelpLibrary.load(tmp_path)


def test_english_and_french_pages_say_the_same_things() -> None:
    """Both catalogues have the same keys and the same placeholders."""
    from string import Formatter

    from blume_access_gateway.i18n import CATALOGUES

    english, french = CATALOGUES["en-CA"], CATALOGUES["fr-CA"]
    assert set(english) == set(french)
    for key, text in english.items():
        names = {field for _, field, _, _ in Formatter().parse(text) if field}
        assert names == {field for _, field, _, _ in Formatter().parse(french[key]) if field}, key
