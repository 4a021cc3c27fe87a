"""Section citations in the code point into docs/MODEL.md.

Comments and docstrings cite LISA facts as "docs/MODEL.md" followed by a section sign and a
section number, N or N.N (a range N.N-N.N cites both ends). Every section sign in the Python
sources must be such a citation, and every cited number must be a numbered heading of
docs/MODEL.md ("## 1. ..." is section 1, "### 1.5 ..." is section 1.5). This file writes the sign
as an escape, so that it does not cite anything itself. Standard library only: this runs with the
ROS-free core tests.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL_DOC = ROOT / "docs" / "MODEL.md"
SCANNED = ("lisa_ros", "test", "bench", "training", "examples", "scripts")

SECTION = "\N{SECTION SIGN}"
_NUMBER = r"\d+(?:\.\d+)?"
CITATION = re.compile(rf"docs/MODEL\.md {SECTION}({_NUMBER})(?:-({_NUMBER}))?(?![\d.]*\d)")
HEADING = re.compile(r"^#{2,4} (\d+(?:\.\d+)*)\.?\s+\S")


def doc_sections(text: str) -> set[str]:
    """The section numbers of a document's numbered headings."""
    return {match.group(1) for match in map(HEADING.match, text.splitlines()) if match}


def citation_problems(text: str, sections: set[str], where: str = "") -> list[str]:
    """One message per section sign in ``text`` that is not a citation of an existing section."""
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        if SECTION not in line:
            continue
        cited = []
        for match in CITATION.finditer(line):
            cited += [n for n in match.groups() if n is not None]
        left = CITATION.sub("", line)
        if SECTION in left:
            problems.append(f"{where}:{number}: {SECTION} outside a 'docs/MODEL.md {SECTION}N' citation: "
                            f"{line.strip()}")
        problems += [f"{where}:{number}: docs/MODEL.md has no section {n}: {line.strip()}"
                     for n in cited if n not in sections]
    return problems


def python_sources(root: Path = ROOT) -> list[Path]:
    """Every .py file under the scanned folders, and the extensionless Python scripts of scripts/."""
    files = []
    for folder in SCANNED:
        files += sorted((root / folder).rglob("*.py"))
    for script in sorted((root / "scripts").glob("*")):
        if script.is_file() and not script.suffix:
            first_line = script.read_bytes().split(b"\n", 1)[0]
            if first_line.startswith(b"#!") and b"python" in first_line:
                files.append(script)
    return files


def test_model_doc_has_the_numbered_sections():
    sections = doc_sections(MODEL_DOC.read_text(encoding="utf-8"))
    cited_by_the_code = {"1", "1.3", "1.5", "1.6", "1.7", "2", "2.3", "2.4", "2.5", "3.1", "3.2", "3.3", "3.6",
                         "4", "5", "5.1", "5.2", "5.5", "5.7", "6.1", "6.2", "7.3"}
    assert cited_by_the_code <= sections, sorted(cited_by_the_code - sections)


def test_every_section_citation_points_into_model_doc():
    sections = doc_sections(MODEL_DOC.read_text(encoding="utf-8"))
    problems, citations = [], 0
    for path in python_sources():
        text = path.read_text(encoding="utf-8")
        citations += len(CITATION.findall(text))
        problems += citation_problems(text, sections, str(path.relative_to(ROOT)))
    assert not problems, "\n".join(problems)
    assert citations > 0, "no docs/MODEL.md citation found: is the scan looking in the right place?"


def test_the_check_catches_bad_citations():
    sections = {"1", "1.5", "3.3", "3.6"}

    def problems(text: str) -> list[str]:
        return citation_problems(text.replace("$", SECTION), sections)

    assert not problems("x (docs/MODEL.md $1.5 items 1-2) and docs/MODEL.md $1.")
    assert not problems("docs/MODEL.md $3.3-3.6. The template")
    assert problems("the gather (spec $1.5)")                # the old form
    assert problems("the gather ($1.5)")                     # bare
    assert problems("docs/MODEL.md $2")                      # no such section
    assert problems("docs/MODEL.md $1.5.2")                  # deeper than a citation goes
    assert problems("docs/MODEL.md $3.3-3.7")                # range end missing
    assert problems("docs/MODEL.md $1.5 and $3.3")           # the second one bare


# ------------------------------------------------------------------------------ links in the docs
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def markdown_files(root: Path = ROOT) -> list[Path]:
    """The documentation a reader follows: the README, docs/ and training/README.md."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), root / "training" / "README.md"]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lowercase, markup and punctuation other than - and _ dropped,
    spaces -> '-'."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a markdown text's headings (outside code blocks); a repeated heading gets
    -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found, fenced = set(), False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and re.match(r"^#{1,6} ", line):
            base = slug(line.lstrip("#"))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def link_problems(path: Path, root: Path = ROOT) -> list[str]:
    """One message per relative link of ``path`` whose file does not exist or whose #anchor is no
    heading of its file (links to the web and mail are not followed)."""
    problems, fenced = [], False
    text = path.read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        for match in LINK.finditer(re.sub(r"`[^`]*`", "", line)):
            target = match.group(1) or match.group(2)
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            where = f"{path.relative_to(root)}:{number}: {target}"
            if not linked.exists():
                problems.append(f"{where}: no such file")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked.read_text(encoding="utf-8")):
                problems.append(f"{where}: no heading with this anchor")
    return problems


def test_every_link_in_the_docs_resolves():
    files = markdown_files()
    problems = [problem for path in files for problem in link_problems(path)]
    assert not problems, "\n".join(problems)
    assert sum(len(LINK.findall(path.read_text(encoding="utf-8"))) for path in files) > 20  # the scan sees links


def test_the_link_check_catches_missing_files_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "A.md").write_text("# Title\n## The node's `topics` (ROS 2)\n## Again\n## Again\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/A.md#the-nodes-topics-ros-2) [ok2](docs/A.md#again-1) [web](https://x.org/#y)\n"
                    "[gone](docs/B.md) [bad](docs/A.md#nope) ![pic](docs/pic.png)\n"
                    "```\n[in code](nowhere.md)\n```\n[self](#title-missing)\n")
    problems = link_problems(page, tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "docs/B.md: no such file", "docs/A.md#nope: no heading with this anchor", "docs/pic.png: no such file",
        "#title-missing: no heading with this anchor"], problems
