"""The docs hold together: README.md is the door (at most 200 lines), every relative link and image on a page
resolves, and every figure under docs/ is shown on a page that gives a command to make it."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
FIGURES = (".png", ".svg", ".gif", ".jpg")


def links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # (code blocks hold code, not links)
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in links(page):
            path = target.split("#")[0]
            if path and not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert not broken, broken


def test_every_figure_is_shown_on_a_page_with_the_command_that_made_it():
    shown: dict[Path, list[Path]] = {}
    for page in PAGES:
        for target in links(page):
            path = (page.parent / target.split("#")[0]).resolve()
            if path.suffix in FIGURES:
                shown.setdefault(path, []).append(page)
    figures = [p.resolve() for p in (ROOT / "docs").rglob("*") if p.suffix in FIGURES]
    orphans = [str(p.relative_to(ROOT)) for p in figures if p not in shown]
    assert not orphans, f"figures no page shows: {orphans}"
    commandless = [str(p.relative_to(ROOT)) for p in figures
                   if not any(re.search(r"^ {4}(grokrun|python3? |PYTHONPATH)", page.read_text(), re.M)
                              for page in shown[p])]
    assert not commandless, f"figures shown on no page that gives a command: {commandless}"


def test_the_readme_is_short_and_links_every_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    linked = {(ROOT / t.split("#")[0]).resolve() for t in links(ROOT / "README.md")}
    unlinked = [str(p.relative_to(ROOT)) for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"docs pages the README does not link: {unlinked}"


def test_the_checker_finds_a_broken_link_and_an_orphan(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("see [there](missing.md) and ![a figure](fig.png)\n```\n[not a link](nowhere.md)\n```\n")
    assert links(page) == ["missing.md", "fig.png"]
    assert not (tmp_path / "missing.md").exists()
