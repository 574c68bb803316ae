"""A clean clone stands on its own: nothing in it reads or cites a file outside the repository."""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".nox", ".venv", "node_modules", "__pycache__", "build", "dist", "docs", "fixtures",
             "finetune/outputs", "finetune/logs", "finetune/state", "finetune/cache", "benchmarks/out"}
# spelt in pieces so that this file does not match itself (`git grep` for them stays empty)
SHARED = "sha" + "red"
OUTSIDE = re.compile("|".join(["FIELD" + "-NOTES", r"\.\./" + SHARED, SHARED + "/fixtures",
                               r"parents\[\d\]\s*/\s*[\"']" + SHARED]))


def source_files() -> list[Path]:
    out = []
    for folder, dirs, files in os.walk(ROOT):
        rel = Path(folder).relative_to(ROOT).as_posix()
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and f"{rel}/{d}".lstrip("./") not in SKIP_DIRS]
        out += [Path(folder) / f for f in files
                if Path(f).suffix in {".py", ".md", ".toml", ".yml", ".yaml", ".sh", ".cfg", ""}]
    return out


def test_nothing_cites_or_reads_outside_the_repository():
    files = source_files()
    assert any(p.name == "conftest.py" for p in files)
    hits = []
    for path in files:
        if path.resolve() == Path(__file__).resolve():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        hits += [f"{path.relative_to(ROOT)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                 if OUTSIDE.search(line)]
    assert not hits, "cite docs/field-notes.md and tests/fixtures/ instead: " + ", ".join(hits)


def test_cited_field_notes_sections_exist():
    notes = (ROOT / "docs" / "field-notes.md").read_text(encoding="utf-8")
    anchors = set(re.findall(r"^## ([\w-]+)$", notes, re.M))
    cited = set()
    for path in source_files():
        if path.suffix == ".py":
            cited.update(re.findall(r"docs/field-notes\.md#([\w-]+)", path.read_text(encoding="utf-8")))
    assert cited, "no code cites docs/field-notes.md"
    assert cited <= anchors, f"cited sections missing from docs/field-notes.md: {cited - anchors}"


def test_demo_fixtures_carry_licence_and_source():
    folder = ROOT / "tests" / "fixtures" / "llamafactory-demo"
    assert "Apache License" in (folder / "LICENSE").read_text(encoding="utf-8")
    readme = (folder / "README.md").read_text(encoding="utf-8")
    assert re.search(r"commit `[0-9a-f]{40}`", readme)
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json", "identity.json", "glaive_toolcall_en_demo.json"):
        assert (folder / name).is_file() and name in readme
