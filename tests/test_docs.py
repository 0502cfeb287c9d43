"""The docs ship with ddfast: every markdown file that the code, scripts or docs cite exists in the repository, with
the cited section, and nothing cites a document or an issue tracker that does not ship."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ["ddfast", "bench", "scripts", "docs", "tests", "csrc", ".ci", "README.md", "CHANGELOG.md", "Makefile",
           "setup.py"]
SUFFIXES = {".py", ".md", ".h", ".cuh", ".cu", ".cpp", ".sh", ""}
SKIPPED = {ROOT / "bench" / "results", Path(__file__).resolve()}  # measurements; this file names the patterns

MD_MENTION = re.compile(r"(?<![\w./-])((?:\.\.?/)?[\w][\w./-]*\.md)(#[\w-]+)?\b")
MD_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
OUTSIDE_CITATIONS = {
    "a design file that does not ship": re.compile(r"\b(?:OPS|METHODS|ARCHITECTURE)\.md\b"),
    "a path outside the repository": re.compile(r"\.\./shared\b"),
    "an issue number": re.compile(r"\bissues?\s*#?\d+|(?<![\w&/#])#\d+\b", re.IGNORECASE),
    "an issue title": re.compile(r"\(issues?:", re.IGNORECASE),
}


def scanned_files() -> list[Path]:
    files = []
    for name in SCANNED:
        path = ROOT / name
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for p in candidates:
            if p.suffix in SUFFIXES and not any(p == s or s in p.parents for s in SKIPPED) and "__pycache__" not in p.parts:
                files.append(p)
    return files


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors of a markdown file (lower case, punctuation dropped, spaces to hyphens)."""
    found = set()
    for line in markdown.read_text().splitlines():
        heading = re.match(r"#{1,6}\s+(.*)", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


def resolve(citing: Path, target: str) -> Path | None:
    """The cited file, relative to the citing file's folder or to the repository root."""
    for base in (citing.parent, ROOT):
        path = (base / target).resolve()
        if path.is_file() and ROOT in path.parents:
            return path
    return None


def broken_citations(path: Path) -> list[str]:
    text = path.read_text(errors="replace")
    cited = [(m.group(1), m.group(2)) for m in MD_MENTION.finditer(text)]
    if path.suffix == ".md":
        for m in MD_LINK.finditer(text):
            target = m.group(1)
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto
            file_part, _, anchor = target.partition("#")
            cited.append((file_part, "#" + anchor if anchor else None))
    problems = []
    for file_part, anchor in cited:
        target = resolve(path, file_part) if file_part else path
        if target is None:
            problems.append(f"{file_part} does not exist")
        elif anchor and target.suffix == ".md" and anchor[1:] not in anchors(target):
            problems.append(f"{file_part}{anchor}: no such section in {target.relative_to(ROOT)}")
    return problems


def test_the_scan_covers_the_code_and_the_docs():
    names = {p.relative_to(ROOT).as_posix() for p in scanned_files()}
    assert {"README.md", "docs/DESIGN.md", "docs/semantics.md", "docs/methods.md", "ddfast/runner.py",
            "bench/common.py", "scripts/results.py"} <= names


def test_every_cited_document_and_section_exists():
    problems = {p.relative_to(ROOT).as_posix(): broken_citations(p) for p in scanned_files()}
    assert not {k: v for k, v in problems.items() if v}


@pytest.mark.parametrize("what", sorted(OUTSIDE_CITATIONS))
def test_nothing_cites_what_does_not_ship(what):
    pattern = OUTSIDE_CITATIONS[what]
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in scanned_files()
            for n, line in enumerate(p.read_text(errors="replace").splitlines(), 1) if pattern.search(line)]
    assert not hits, f"{what} cited:\n" + "\n".join(hits)


def test_the_checks_catch_a_broken_citation(tmp_path):
    page = ROOT / "docs" / "semantics.md"
    assert "grad_distance" in anchors(page) and "no-such-op" not in anchors(page)
    citing = ROOT / "ddfast" / "fake.py"
    assert resolve(citing, "docs/semantics.md") == page and resolve(citing, "docs/nothing.md") is None
    assert OUTSIDE_CITATIONS["an issue number"].search("(issue 11 mode (c))")
    assert not OUTSIDE_CITATIONS["an issue number"].search("color #ffffff, cuda:0")
