"""F1 help: every page names a topic that has an article in docs/help/ in each locale, links
to it visibly in its own language, and loads the script that opens it on F1; /help/<topic>
serves the article in the language asked for (?lang=, else Accept-Language)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from blume_access_gateway.help import HelpError, HelpLibrary
from blume_access_gateway.views import ALL_TOPICS
from blume_contracts.locales import LOCALES

from services.access_gateway.tests.conftest import REPO, Harness

TOPIC = re.compile(r'<body data-help-topic="([a-z0-9-]+)">')


HELP = REPO / "docs" / "help"
FRENCH = "fr-CA"


def h1(html: str) -> str:
    found = re.search(r"<h1>(.*?)</h1>", html)
    assert found is not None
    return found.group(1)


@pytest.mark.parametrize("locale", LOCALES)
@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_every_page_topic_has_an_article_in_every_locale(
    harness: Harness, topic: str, locale: str
) -> None:
    """Each topic a page can name is served at /help/<topic>?lang=<locale>, in that locale."""
    with harness.client() as client:
        article = client.get(f"/help/{topic}", params={"lang": locale})
    assert article.status_code == 200
    assert f'data-help-article="{topic}"' in article.text
    assert article.headers["content-language"] == locale
    assert f'<html lang="{locale[:2]}">' in article.text


def test_every_topic_exists_in_both_locales_on_disk() -> None:
    """docs/help/<topic>.md (en-CA) and docs/help/fr-CA/<topic>.md: the same topics, all of
    them page topics; no other locale folder pretends to be one."""
    english = {path.stem for path in HELP.glob("*.md")}
    french = {path.stem for path in (HELP / FRENCH).glob("*.md")}
    assert english == french == set(ALL_TOPICS)
    assert {path.name for path in HELP.iterdir() if path.is_dir()} == {FRENCH}


@pytest.mark.parametrize("topic", ALL_TOPICS)
def test_the_french_article_is_a_translation_not_a_copy(harness: Harness, topic: str) -> None:
    """The fr-CA article has its own title and text, and keeps the article's sections."""
    english = (HELP / f"{topic}.md").read_text(encoding="utf-8")
    french = (HELP / FRENCH / f"{topic}.md").read_text(encoding="utf-8")
    heading = re.compile(r"^#+ ", re.MULTILINE)
    assert len(heading.findall(french)) == len(heading.findall(english))
    english_title = harness.gateway.help.get(topic, "en-CA")
    french_title = harness.gateway.help.get(topic, FRENCH)
    assert english_title is not None
    assert french_title is not None
    assert french_title.title != english_title.title
    shared_lines = set(english.splitlines()[1:]) & set(french.splitlines()[1:])
    assert shared_lines <= {""}


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
            assert f'href="/help/{topic}?lang=en" target="_blank"' in page, path
            assert '<script src="/static/help.js" defer></script>' in page, path


def test_the_f1_script_opens_the_help_link_in_a_new_window(harness: Harness) -> None:
    """help.js listens for F1, prevents the browser's own help, opens the page's Help link
    (topic and language), or /help/<topic>?lang=<the page's lang> on a page without one."""
    with harness.client() as client:
        script = client.get("/static/help.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert 'event.key !== "F1"' in script.text
    assert "preventDefault" in script.text
    assert 'querySelector("[data-help-link]")' in script.text
    assert 'getAttribute("lang")' in script.text
    assert "window.open(helpUrl()" in script.text


def test_a_french_page_links_its_help_in_french(harness: Harness) -> None:
    """A fr-CA link page, in a browser that prefers English: its Help link (what F1 opens)
    names the page's language, and following it gives the fr-CA article."""
    token, _link = harness.add_link(locale=FRENCH)
    english = {"accept-language": "en-CA,en;q=0.9"}
    with harness.client() as client:
        page = client.get(f"/s/{token}", headers=english)
        [href] = re.findall(r'<a class="help-link" href="([^"]+)"', page.text)
        article = client.get(href, headers=english)
    assert page.headers["content-language"] == FRENCH
    assert href == "/help/link-page?lang=fr"
    assert h1(article.text) == "La page du lien"
    assert article.headers["content-language"] == FRENCH
    assert 'href="/help/index?lang=fr"' in article.text  # the help page's own Help link


@pytest.mark.parametrize(
    ("query", "accept_language", "expected"),
    [
        ({"lang": "fr"}, "en-CA,en;q=0.9", "fr-CA"),
        ({"lang": "fr-CA"}, None, "fr-CA"),
        ({"lang": "FR-ca"}, None, "fr-CA"),
        ({"lang": "en"}, "fr-CA,fr;q=0.9", "en-CA"),
        ({"lang": "en-CA"}, "fr", "en-CA"),
        ({}, "fr-CA,fr;q=0.9,en;q=0.8", "fr-CA"),
        ({}, "en-CA", "en-CA"),
        ({}, None, "en-CA"),
        ({"lang": "de"}, "fr-CA", "fr-CA"),
        ({"lang": ""}, "fr", "fr-CA"),
        ({"lang": "de"}, None, "en-CA"),
    ],
)
def test_the_article_language_is_the_pages_else_the_browsers(
    harness: Harness, query: dict[str, str], accept_language: str | None, expected: str
) -> None:
    """?lang= naming one of the page locales wins (by its primary subtag, as Accept-Language
    is read); otherwise Accept-Language decides, as on every page without a link's locale."""
    headers = {"accept-language": accept_language} if accept_language else {}
    with harness.client() as client:
        article = client.get("/help/sign-in-code", params=query, headers=headers)
    assert article.status_code == 200
    assert article.headers["content-language"] == expected
    title = "Votre code de connexion" if expected == FRENCH else "Your sign-in code"
    assert h1(article.text) == title


@pytest.mark.parametrize("locale", LOCALES)
def test_links_between_articles_stay_in_the_articles_language(
    harness: Harness, locale: str
) -> None:
    """Every /help/ link inside an article and in the topic list carries its language."""
    with harness.client() as client:
        index = client.get("/help/index", params={"lang": locale}).text
    links = re.findall(r'href="(/help/[^"]*)"', index)
    assert len(links) > len(ALL_TOPICS)
    assert all(link.endswith(f"?lang={locale[:2]}") for link in links), links


def test_an_unknown_topic_is_a_404_in_the_asked_language(harness: Harness) -> None:
    """/help/<no such topic>?lang=fr is the French 404 page."""
    with harness.client() as client:
        missing = client.get("/help/no-such-topic", params={"lang": "fr"})
    assert missing.status_code == 404
    assert missing.headers["content-language"] == FRENCH
    assert h1(missing.text) == "Page introuvable"


def test_unknown_topics_are_404(harness: Harness) -> None:
    """/help/<anything else> is a 404 page, including attempts at paths."""
    with harness.client() as client:
        assert client.get("/help/no-such-topic").status_code == 404
        assert client.get("/help/..%2Fsecrets").status_code == 404


def write_articles(folder: Path, **topics: str) -> Path:
    """``topics`` (topic name with _ for -) in en-CA and fr-CA, the same text in both."""
    (folder / FRENCH).mkdir(parents=True, exist_ok=True)
    for name, text in topics.items():
        for directory in (folder, folder / FRENCH):
            (directory / f"{name.replace('_', '-')}.md").write_text(text, encoding="utf-8")
    return folder


def test_raw_html_in_an_article_is_shown_as_text(tmp_path: Path) -> None:
    """Articles are Markdown: HTML in them is escaped, never run."""
    library = HelpLibrary.load(write_articles(tmp_path, index="# Help\n\n<script>1</script>\n"))
    for locale in LOCALES:
        article = library.get("index", locale)
        assert article is not None
        assert "<script>" not in article.html
        assert "&lt;script&gt;" in article.html


def test_help_without_an_index_refuses_to_start(tmp_path: Path) -> None:
    """A help folder with no index.md is a configuration error, at start-up."""
    with pytest.raises(HelpError, match=r"no index\.md"):
        HelpLibrary.load(write_articles(tmp_path, link_page="# Link\n"))


@pytest.mark.parametrize(
    ("remove", "missing"),
    [
        ("fr-CA/link-page.md", "fr-CA/link-page.md"),
        ("link-page.md", "en-CA/link-page.md"),
        ("fr-CA/index.md", "fr-CA/index.md"),
    ],
)
def test_help_with_a_topic_missing_in_a_locale_refuses_to_start(
    tmp_path: Path, remove: str, missing: str
) -> None:
    """Every topic in every locale, or no help at all: a missing translation (or an
    article only in French) is named at start-up, never served as another language."""
    write_articles(tmp_path, index="# Help\n", link_page="# Link\n")
    (tmp_path / remove).unlink()
    with pytest.raises(HelpError, match=missing):
        HelpLibrary.load(tmp_path)


def test_help_without_a_french_folder_refuses_to_start(tmp_path: Path) -> None:
    """English articles alone are not the help of a bilingual product."""
    (tmp_path / "index.md").write_text("# Help\n", encoding="utf-8")
    with pytest.raises(HelpError, match="fr-CA"):
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
