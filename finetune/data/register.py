"""Register ChatML JSONL files in ``<data dir>/dataset_info.json`` the way LLaMA-Factory needs.

* Checks each file first (:mod:`finetune.data.check`); files with errors are refused unless
  ``force`` (then the message says what LLaMA-Factory will drop or fail on).
* The entry comes from :func:`finetune.data.chatml.dataset_entry`: sharegpt with the full tag map
  incl. ``system_tag``, plus a ``tools`` column when the file has one.
* ``file_name`` is relative to the data dir. A file outside the data dir is COPIED into it
  (LLaMA-Factory and its Web UI only see files inside ``dataset_dir``); an existing different file
  of that name there is never overwritten unless ``force``.
* Other entries are kept as they are; the write is atomic (temp file + ``os.replace``) and the
  previous file is kept as ``dataset_info.json.bak``; registering the same file again changes
  nothing (no write at all).
* Names are made safe (letters, digits, ``.``, ``_``, ``-``); an automatic name that is taken by a
  different file gets ``-2``, ``-3`` ...; an explicit name taken by a different file is refused
  unless ``force``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from finetune.data import chatml
from finetune.data.check import check_file
from finetune.errors import UserError
from finetune.layout import Layout, slugify


def read_dataset_info(path: Path) -> dict:
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"dataset_info.json is not valid JSON ({err.msg})", where=f"{path}:{err.lineno}",
                        fix=f"repair it (a backup may be at {path}.bak), then rerun") from None
    if not isinstance(data, dict):
        raise UserError("dataset_info.json must hold a JSON object of dataset name -> entry", where=str(path),
                        fix=f"repair it (a backup may be at {path}.bak)")
    return data


def write_json_atomic(path: Path, data: dict, backup: bool = True) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder; keep the old one as ``.bak``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    if backup and path.exists():
        shutil.copy2(path, path.with_name(path.name + ".bak"))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _same_file(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _place(src: Path, data_dir: Path, force: bool) -> Path:
    """The file's path inside the data dir (copied there when it lives elsewhere)."""
    if _inside(src, data_dir):
        return src
    target = data_dir / src.name
    if target.exists() and not _same_file(src, target):
        if not force:
            raise UserError(f"{target} already exists and differs from {src}", where=str(src),
                            fix="rename your file, or pass --force to overwrite the copy in the data dir")
    if not target.exists() or not _same_file(src, target):
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    return target


def _choose_name(info: dict, wanted: str, file_name: str, explicit: bool, force: bool) -> str:
    name = slugify(wanted, max_len=80) if wanted else "dataset"
    taken = info.get(name)
    if taken is None or taken.get("file_name") == file_name:
        return name
    if explicit:
        if force:
            return name
        raise UserError(f"dataset name {name!r} is already used for {taken.get('file_name')!r}",
                        fix="choose another --names value, or pass --force to repoint it")
    n = 2
    while (other := info.get(f"{name}-{n}")) is not None and other.get("file_name") != file_name:
        n += 1
    return f"{name}-{n}"


def register_files(layout: Layout, files: Sequence[str | Path], names: Sequence[str] | None = None,
                   force: bool = False) -> list[dict]:
    """Add or update entries for ``files``; returns ``[{"name", "entry", "path", "changed", "dropped"}]``."""
    if not files:
        raise UserError("no files to register", fix="invoke data.register dataset/llamafactory/FILE.jsonl")
    names = list(names or [])
    if names and len(names) != len(files):
        raise UserError(f"{len(names)} name(s) for {len(files)} file(s)", fix="pass one --names value per file")
    data_dir = layout.data_dir.resolve()
    info_path = layout.dataset_info
    info = read_dataset_info(info_path)
    new_info = dict(info)
    results: list[dict] = []
    for i, raw in enumerate(files):
        src = Path(raw).expanduser().resolve()
        if not src.is_file():
            raise UserError(f"no such file: {raw}", fix="pass the path of a ChatML .jsonl file")
        if src.suffix.lower() not in chatml.CHATML_EXTENSIONS:
            raise UserError(f"{src.name}: LLaMA-Factory reads ChatML from .jsonl / .json files", where=str(src),
                            fix="rename the file to .jsonl (one JSON object per line)")
        report = check_file(src)
        dropped = report.records - report.valid
        if report.errors and not force:
            first = sorted((p for p in report.problems if p.severity == "error"), key=lambda p: p.line)[:5]
            raise UserError(
                f"{src.name} has {report.errors} error(s): LLaMA-Factory would "
                + ("fail to load it" if report.fatal else f"drop {dropped} of {report.records} conversations"),
                where=str(src), details=[f"{src}:{p.line}: {p.code}: {p.message}" for p in first],
                fix=f"invoke data.check {raw}  (fix them), or register anyway with --force")
        placed = _place(src, data_dir, force)
        file_name = placed.relative_to(data_dir).as_posix()
        explicit = bool(names)
        name = _choose_name(new_info, names[i] if names else placed.stem, file_name, explicit, force)
        entry = chatml.dataset_entry(file_name, has_tools=report.has_tools)
        changed = new_info.get(name) != entry
        new_info[name] = entry
        results.append({"name": name, "entry": entry, "path": str(placed), "changed": changed,
                        "copied": placed != src, "errors": report.errors, "dropped": dropped,
                        "fatal": report.fatal})
    if new_info != info:
        write_json_atomic(info_path, new_info)
    return results
