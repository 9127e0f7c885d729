"""The newcomer's pages: a short README with the set-up commands first, docs whose links all
resolve, and a curated results folder."""

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "bench/results/README.md",
]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    out = set()
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def test_readme_is_short_with_the_two_commands_first_and_a_quick_start():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    assert lines[0].strip().startswith("make demo") and lines[1].strip().startswith("make test")
    quick = next(i for i, line in enumerate(lines) if line.startswith("## Quick start"))
    assert quick < 80


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_link_resolves(page):
    links = LINK.findall(page.read_text())
    assert links or page.name != "README.md"
    for link in links:
        if re.match(r"[a-z]+://", link) or link.startswith("mailto:"):
            continue
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link} does not resolve"
        if anchor and target.suffix == ".md":
            assert anchor in _anchors(target), f"{page.name}: {link}: no such heading"


def test_results_folder_is_curated():
    try:
        files = subprocess.run(
            ["git", "ls-files", "bench/results"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        files = [p for p in (ROOT / "bench/results").rglob("*") if p.is_file()]
    assert 0 < len(files) <= 80
    index = (ROOT / "bench/results/README.md").read_text()
    for f in files:
        name = Path(f).name
        if name.endswith((".md", ".txt")) and name != "README.md":
            assert name in index, f"{name} is not in bench/results/README.md"
