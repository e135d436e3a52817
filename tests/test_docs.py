"""The documentation in docs/ against the running extension and the repository.

- Every route of the extension under /satmachineadmin/api/v1, as the real LNbits app
  serves it in /openapi.json, has its section in docs/api.md: a heading
  `### METHOD /path` (the path after the prefix, path parameters as in the schema), and
  every such heading names a route that exists.
- Each route section says who may call it (a line starting `Who:`) and what it refuses
  (a line starting `Errors:`).
- The sections that code and other documents cite exist, and the links between the
  documents resolve (file and anchor).
- No tracked file refers to documentation outside the repository (the specs the
  project grew from): a reference to api.md, money.md, sources.md, product.md or
  lnbits-notes.md must name a file of the repository.
"""

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PREFIX = "/satmachineadmin/api/v1"
HTTP_METHODS = ("get", "post", "put", "patch", "delete")
ROUTE_HEADING = re.compile(r"^### (GET|POST|PUT|PATCH|DELETE) (/\S*)\s*$")
ANY_HEADING = re.compile(r"^(#{1,6}) +(.+?)\s*#*\s*$")

# Headings other files cite by name: renaming one breaks those citations.
REQUIRED_HEADINGS = {
    "api.md": ["Who is calling", "Errors", "Conventions", "Shapes"],
    "money.md": [
        "Units",
        "Largest-remainder allocation",
        "Commission",
        "Principal to flow-mode LPs",
        "Remaining balance",
        "Fixed mode",
        "Small-balance settlement",
        "Current rate",
    ],
    "sources.md": ["bitSpire", "Lamassu", "Manual entry"],
    "operations.md": ["Install", "Upgrade", "Backup", "Scale-out", "Tests"],
}


# ---------------------------------------------------------------- reading Markdown


def markdown_lines(path: Path) -> list[tuple[int, str, bool]]:
    """(line number, line, inside a fenced code block) for every line of a file."""
    out = []
    fenced = False
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append((number, line, True))
            continue
        out.append((number, line, fenced))
    return out


def headings(path: Path) -> list[tuple[int, str]]:
    """(level, text) of every heading outside code blocks."""
    found = []
    for _, line, fenced in markdown_lines(path):
        match = ANY_HEADING.match(line)
        if match and not fenced:
            found.append((len(match.group(1)), match.group(2).strip()))
    return found


def slug(text: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def route_sections(path: Path) -> dict[tuple[str, str], list[str]]:
    """(METHOD, path) of each route heading -> the lines of its section (up to the
    next heading of level 3 or higher). A route documented twice is an error."""
    sections: dict[tuple[str, str], list[str]] = {}
    current: list[str] | None = None
    for number, line, fenced in markdown_lines(path):
        heading = None if fenced else ANY_HEADING.match(line)
        if heading and len(heading.group(1)) <= 3:
            current = None
            route = ROUTE_HEADING.match(line)
            if route:
                key = (route.group(1), route.group(2))
                assert key not in sections, (
                    f"{path.name}:{number}: {key[0]} {key[1]} is documented twice"
                )
                current = sections[key] = []
            continue
        if current is not None:
            current.append(line)
    return sections


# ---------------------------------------------------------------- the API reference


@pytest.fixture
async def api_routes(http: Any, super_user: Any) -> set[tuple[str, str]]:
    """(METHOD, path after the prefix) of every route the running app serves.
    (`super_user` makes sure LNbits' first install is done: before it, every route
    answers with a redirect to /first_install.)"""
    response = await http.get("/openapi.json")
    assert response.status_code == 200, response.text
    spec = response.json()
    found = set()
    for path, operations in spec["paths"].items():
        if not path.startswith(PREFIX + "/"):
            continue
        for method in operations:
            if method in HTTP_METHODS:
                found.add((method.upper(), path[len(PREFIX) :]))
    return found


async def test_every_route_has_its_section_in_api_md(api_routes):
    routes = api_routes
    assert len(routes) >= 30, sorted(routes)
    documented = set(route_sections(DOCS / "api.md"))
    missing = sorted(routes - documented)
    assert not missing, (
        "routes without a `### METHOD /path` section in docs/api.md: "
        + ", ".join(f"{m} {p}" for m, p in missing)
    )


async def test_every_section_of_api_md_names_a_route(api_routes):
    routes = api_routes
    documented = set(route_sections(DOCS / "api.md"))
    stale = sorted(documented - routes)
    assert not stale, (
        "docs/api.md documents routes the app does not serve: "
        + ", ".join(f"{m} {p}" for m, p in stale)
    )


def _paragraph(lines: list[str], label: str) -> str | None:
    """The text of the paragraph that starts with `label` (up to a blank line)."""
    for i, line in enumerate(lines):
        if line.startswith(label):
            text = [line]
            for more in lines[i + 1 :]:
                if not more.strip():
                    break
                text.append(more)
            return "\n".join(text)
    return None


def test_each_route_section_says_who_and_errors():
    sections = route_sections(DOCS / "api.md")
    assert sections, "docs/api.md has no `### METHOD /path` sections"
    problems = []
    for (method, path), lines in sorted(sections.items()):
        where = f"{method} {path}"
        who = _paragraph(lines, "Who:")
        if who is None:
            problems.append(f"{where}: no line starting with 'Who:'")
        elif "key" not in who:
            problems.append(f"{where}: 'Who:' does not say which key ({who!r})")
        errors = _paragraph(lines, "Errors:")
        if errors is None:
            problems.append(f"{where}: no line starting with 'Errors:'")
        elif not re.search(r"\b4\d\d\b|key errors", errors):
            problems.append(f"{where}: 'Errors:' names no status ({errors!r})")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- the documents


def test_cited_headings_exist():
    missing = []
    for name, wanted in REQUIRED_HEADINGS.items():
        path = DOCS / name
        assert path.is_file(), f"docs/{name} is missing"
        present = {text for level, text in headings(path) if level == 2}
        missing += [f"docs/{name}: ## {w}" for w in wanted if w not in present]
    assert not missing, "headings that are cited but missing:\n" + "\n".join(missing)


MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_links_between_documents_resolve():
    broken = []
    for path in sorted(DOCS.glob("*.md")):
        anchors_of: dict[Path, set[str]] = {}
        for number, line, fenced in markdown_lines(path):
            if fenced:
                continue
            for target in MARKDOWN_LINK.findall(line):
                if re.match(r"^[a-z]+:", target):
                    continue  # http:, https:, mailto:
                file_part, _, anchor = target.partition("#")
                linked = (path.parent / file_part).resolve() if file_part else path
                if not linked.exists() or REPO not in linked.parents:
                    broken.append(f"{path.name}:{number}: {target} (no such file)")
                    continue
                if anchor and linked.suffix == ".md":
                    if linked not in anchors_of:
                        anchors_of[linked] = {slug(t) for _, t in headings(linked)}
                    if anchor not in anchors_of[linked]:
                        broken.append(
                            f"{path.name}:{number}: {target} (no such heading)"
                        )
    assert not broken, "broken links in docs/:\n" + "\n".join(broken)


# ---------------------------------------------------------------- references


SPEC_NAMES = "api|money|sources|product|lnbits-notes"
# A path ending in one of the spec names; it must not continue a longer word or path,
# so URLs (whose every segment follows a "/") never match.
DOC_REFERENCE = re.compile(
    rf"(?<![\w./-])((?:\.{{1,2}}/|[\w.-]+/)*(?:{SPEC_NAMES})\.md)(?![\w-])"
    r"(?:#([\w-]+)|\s+[\"']([^\"'\n]{1,80})[\"'])?"
)
OUTSIDE = re.compile(r"\.\./shared\b|\bshared/spec\b")
TEXT_SUFFIXES = {
    ".py",
    ".md",
    ".html",
    ".js",
    ".css",
    ".json",
    ".toml",
    ".txt",
    ".cfg",
    ".ini",
    ".yml",
    ".yaml",
    ".sh",
    "",
}


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    files = []
    for name in filter(None, listed.split("\0")):
        path = REPO / name
        if path.suffix in TEXT_SUFFIXES and path.is_file() and not path.is_symlink():
            files.append(path)
    return files


def reference_problems(path: Path, text: str) -> list[str]:
    problems = []
    shown = path.relative_to(REPO)
    for number, line in enumerate(text.splitlines(), 1):
        if OUTSIDE.search(line):
            problems.append(f"{shown}:{number}: refers outside the repository")
        for match in DOC_REFERENCE.finditer(line):
            written, anchor, title = match.groups()
            candidates = [(path.parent / written).resolve(), (REPO / written).resolve()]
            found = next(
                (c for c in candidates if c.is_file() and REPO in c.parents), None
            )
            if found is None:
                problems.append(
                    f"{shown}:{number}: {written} is not a file of the repository "
                    "(docs/... ?)"
                )
                continue
            known = headings(found)
            if anchor and anchor not in {slug(t) for _, t in known}:
                problems.append(
                    f"{shown}:{number}: {written}#{anchor}: no such heading"
                )
            if title and title not in {t for _, t in known}:
                problems.append(
                    f'{shown}:{number}: {written} "{title}": no such heading'
                )
    return problems


def test_reference_check_itself():
    """The checker flags what it must and passes what it must (no LNbits needed)."""
    here = REPO / "models.py"
    bad = [
        "see spec/api.md",
        "the rules of money.md",
        'money.md "LR"',
        "../shared/spec/sources.md",
        'docs/money.md "No such section"',
    ]
    good = [
        "see docs/api.md",
        'docs/money.md "Fixed mode"',
        "docs/sources.md#lamassu",
        "https://example.com/x/api.md",
        "openapi.md_like_words and test_api.md-ish",
    ]
    for line in bad:
        assert reference_problems(here, line), line
    for line in good:
        assert not reference_problems(here, line), line


def test_no_reference_to_documentation_outside_the_repository():
    me = Path(__file__).resolve()
    problems = []
    for path in tracked_text_files():
        if path.resolve() == me:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        problems += reference_problems(path, text)
    assert not problems, (
        "references to documentation that is not in the repository:\n"
        + "\n".join(problems)
    )
