import json
import re
from pathlib import Path

from pydantic import BaseModel

from worker.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_docs_embed_the_current_json_schemas() -> None:
    """docs/formats.md shows the event, alert and incident schemas; the files in worker/schemas are the source."""
    formats = (ROOT / "docs" / "formats.md").read_text()
    embedded = dict(re.findall(r"^## `([\w.]+\.schema\.json)`\s*```json\n(.*?)\n```", formats, flags=re.S | re.M))
    files = sorted(path.name for path in (ROOT / "worker" / "schemas").glob("*.schema.json"))
    assert sorted(embedded) == files
    for name in files:
        assert json.loads(embedded[name]) == json.loads((ROOT / "worker" / "schemas" / name).read_text()), name


def test_readme_gives_the_two_quick_start_commands() -> None:
    quick_start = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quick_start and "make test" in quick_start


def setting_variables(model: type[BaseModel], prefix: str = "VRAE_") -> list[str]:
    names = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            names += setting_variables(field.annotation, f"{prefix}{name.upper()}__")
        else:
            names.append(f"{prefix}{name.upper()}")
    return names


def test_readme_documents_every_worker_setting() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()

    def documented(name: str) -> bool:
        # A table row may group fields of one section: `VRAE_KAFKA__SSL_CERTFILE` / `SSL_KEYFILE`.
        section, field = name.rsplit("__", 1)
        return any(f"`{name}`" in line or (f"`{section}__" in line and f"`{field}`" in line) for line in lines)

    assert [name for name in setting_variables(Settings) if not documented(name)] == []


def outside_code(text: str) -> str:
    """The Markdown text without fenced code blocks or inline code, where '#' and '](' mean nothing."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation other than '-' and '_' dropped, spaces as '-'."""
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}\s+(.*?)\s*$", re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M),
                              flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def test_readme_and_docs_links_resolve() -> None:
    """Every relative link in the README, docs/ and benchmarks/ points at a file (and heading) that exists."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "benchmarks").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", outside_code(page.read_text())):
            if re.match(r"[a-z]+:", target):
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (page.parent / file_part).resolve() if file_part else page
            if not resolved.exists() or (anchor and resolved.suffix == ".md" and anchor not in anchors(resolved)):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []
