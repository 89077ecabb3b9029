import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_embeds_the_current_json_schemas() -> None:
    """The README shows the event, alert and incident schemas; the files in worker/schemas are the source."""
    readme = (ROOT / "README.md").read_text()
    embedded = dict(re.findall(r"<summary><code>([\w.]+\.schema\.json)</code></summary>\s*```json\n(.*?)\n```",
                               readme, flags=re.S))
    files = sorted(path.name for path in (ROOT / "worker" / "schemas").glob("*.schema.json"))
    assert sorted(embedded) == files
    for name in files:
        assert json.loads(embedded[name]) == json.loads((ROOT / "worker" / "schemas" / name).read_text()), name


def test_readme_gives_the_two_quick_start_commands() -> None:
    quick_start = (ROOT / "README.md").read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "make demo" in quick_start and "make test" in quick_start
