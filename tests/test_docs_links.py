"""The docs stand alone: every file they link to or name is in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = sorted({ROOT / "README.md", ROOT / "CHANGELOG.md", *ROOT.glob("*/*.md")})
# [text](target) and ![alt](target); the target up to a space or ')'
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)")
# a path that leaves its folder written out (`../x/y`), or any file name ending in .md
# (`./backup.sh` in a command line is the user's file, not the repository's)
_PATH = re.compile(r"(?<![\w/.-])(\.\./[\w./-]+|[\w./-]*\w\.md)\b")
_REPO_FILES = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts}


def _targets(doc: Path) -> list[str]:
    text = doc.read_text()
    found = [t for t in _LINK.findall(text) if not re.match(r"[a-z]+:|#", t)]
    return found + _PATH.findall(text)


def _resolves_inside(doc: Path, target: str) -> bool:
    path = target.split("#", 1)[0]
    if not path:
        return True
    for base in (doc.parent, ROOT):
        candidate = (base / path).resolve()
        if candidate.is_relative_to(ROOT) and candidate.exists():
            return True
    # a bare file name (README.md, PROFILE_NOTES.md) written without its folder
    return "/" not in path and path in _REPO_FILES


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_linked_or_named_file_is_in_the_repository(doc: Path) -> None:
    outside = [t for t in _targets(doc) if not _resolves_inside(doc, t)]
    assert outside == [], f"{doc.relative_to(ROOT)} names files that are not in the repository"


def test_the_check_finds_a_link_outside() -> None:
    doc = ROOT / "docs" / "architecture.md"
    assert not _resolves_inside(doc, "../shared/DESIGN.md")
    assert not _resolves_inside(doc, "DESIGN.md")
    assert "../shared/DESIGN.md" in _PATH.findall("the contract is `../shared/DESIGN.md`;")
    assert _LINK.findall("see [x](../../etc/passwd) and ![y](pic.png)") == [
        "../../etc/passwd",
        "pic.png",
    ]
    assert _resolves_inside(doc, "clustering.md#leases")
