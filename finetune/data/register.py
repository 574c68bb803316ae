"""Register ChatML JSONL files in ``<data dir>/dataset_info.json`` the way LLaMA-Factory needs.

* Checks each file first (:mod:`finetune.data.check`); files with errors are refused unless
  ``force`` (then the message says what LLaMA-Factory will drop or fail on).
* The entry comes from :func:`finetune.data.chatml.dataset_entry`: sharegpt with the full tag map
  incl. ``system_tag``, plus a ``tools`` column when the file has one.
* ``file_name`` is relative to the data dir. A file outside the data dir is COPIED into it
  (LLaMA-Factory and its Web UI only see files inside ``dataset_dir``); an existing different file
  of that name there is never overwritten unless ``force`` (and then the result says it was).
* The read-modify-write of ``dataset_info.json`` holds a cross-process lock
  (:func:`finetune.fileio.locked`): two registers at the same moment both keep their entries.
  Writes are atomic and keep the file's mode; the previous file is kept as
  ``dataset_info.json.bak``; registering the same file again changes nothing (no write at all).
* Other entries are kept as they are, but one that is not a JSON object is refused with its name
  and line (LLaMA-Factory's Web UI fails listing datasets on it).
* Names keep letters of any script, digits, ``.``, ``_``, ``-`` (:func:`finetune.data.names.dataset_name`);
  an automatic name taken by a different file gets ``-2``, ``-3`` ...; an explicit name taken by a
  different file is refused unless ``force``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from finetune import fileio
from finetune.data import chatml
from finetune.data.check import check_file, extension_problem
from finetune.data.names import command, data_folder, dataset_name, input_file
from finetune.errors import UserError
from finetune.layout import Layout


def _entry_line(text: str, name: str) -> int:
    match = re.search(r'^\s*' + re.escape(fileio.dumps_json(name)) + r'\s*:', text, re.M)
    return text.count("\n", 0, match.start()) + 1 if match else 0


def validate_dataset_info(data, path: Path) -> dict:
    """``data`` (parsed dataset_info.json) if it is an object of objects, else a :class:`UserError`."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"dataset_info.json holds {type(data).__name__}, not a JSON object of dataset name -> entry",
                        where=str(path), fix=f"repair it (a backup may be at {path}.bak)")
    bad = [k for k, v in data.items() if not isinstance(v, dict)]
    if bad:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        line = _entry_line(text, bad[0])
        raise UserError(
            f"entry {bad[0]!r} in dataset_info.json is {type(data[bad[0]]).__name__}, not an object; "
            "LLaMA-Factory's Web UI fails listing datasets on it",
            where=f"{path}:{line}" if line else str(path),
            details=[f"other entries that are not objects: {', '.join(map(repr, bad[1:]))}"] if bad[1:] else [],
            fix=f'make it an object like {{"file_name": "x.jsonl", "formatting": "sharegpt", ...}} or delete it '
                f"(a backup may be at {path}.bak)")
    return data


def read_dataset_info(path: Path) -> dict:
    return validate_dataset_info(fileio.read_json(path, default={}), path)


def registered_file(data_dir: Path, name: str) -> Path | None:
    """The file registered as ``name`` in ``data_dir``'s dataset_info.json (None when unregistered or
    the registry cannot be read)."""
    try:  # lenient: another broken entry does not hide this one
        info = fileio.read_json(data_dir / "dataset_info.json", default={})
    except (UserError, OSError):
        return None
    entry = info.get(name) if isinstance(info, dict) else None
    return data_dir / str(entry["file_name"]) if isinstance(entry, dict) and entry.get("file_name") else None


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
        return True
    except ValueError:
        return False


def _place(src: Path, data_dir: Path, force: bool) -> tuple[Path, str]:
    """The file's path inside the data dir (copied there when it lives elsewhere), and what was
    done: ``""`` (already there), ``"copied"``, ``"same copy"`` or ``"replaced"``."""
    if _inside(src, data_dir):
        return src, ""
    target = data_dir / src.name
    with fileio.locked(target):
        if not target.exists():
            fileio.atomic_copy(src, target)
            return target, "copied"
        if fileio.same_bytes(src, target):
            return target, "same copy"
        if not force:
            raise UserError(f"{target} already exists and differs from {src}", where=str(src),
                            fix="rename your file, or pass --force to replace the copy in the data dir")
        fileio.atomic_copy(src, target)
        return target, "replaced"


def _choose_name(info: dict, name: str, file_name: str, explicit: bool, force: bool) -> str:
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
    wanted = [dataset_name(n, what="--names") for n in names]  # refused before any work
    data_dir = data_folder(layout.data_dir).resolve()
    info_path = layout.dataset_info
    read_dataset_info(info_path)  # a broken dataset_info.json is reported before the files are checked
    checked = []
    for raw in files:
        src = input_file(Path(raw).expanduser()).resolve()
        bad_ext = extension_problem(src)
        if bad_ext:
            raise UserError(f"{src.name}: {bad_ext}", where=str(src),
                            fix=command(["mv", src, src.with_suffix(src.suffix.lower())])
                            if src.suffix.lower() in chatml.CHATML_EXTENSIONS
                            else "save it as ChatML JSONL with a .jsonl extension (invoke data.convert)")
        report = check_file(src)
        dropped = report.records - report.valid
        if report.errors and not force:
            first = sorted((p for p in report.problems if p.severity == "error"), key=lambda p: p.line)[:5]
            raise UserError(
                f"{src.name} has {report.errors} error(s): LLaMA-Factory would "
                + ("fail to load it" if report.fatal else f"drop {dropped} of {report.records} conversations"),
                where=str(src), details=[f"{src}:{p.line}: {p.code}: {p.message}" for p in first],
                fix=f"{command(['invoke', 'data.check', raw])}  (fix them), or register anyway with --force")
        checked.append((raw, src, report, dropped))
    placed_files = [(*item, *_place(item[1], data_dir, force)) for item in checked]
    results: list[dict] = []

    def update(current) -> dict:
        info = validate_dataset_info(current, info_path)
        new_info = dict(info)
        results.clear()
        for i, (_raw, src, report, dropped, placed, how) in enumerate(placed_files):
            file_name = placed.relative_to(data_dir).as_posix()
            if wanted:
                name = _choose_name(new_info, wanted[i], file_name, True, force)
            else:
                try:
                    auto = dataset_name(placed.stem)
                except UserError:
                    auto = "dataset"
                name = _choose_name(new_info, auto, file_name, False, force)
            entry = chatml.dataset_entry(file_name, has_tools=report.has_tools)
            changed = new_info.get(name) != entry
            new_info[name] = entry
            results.append({"name": name, "entry": entry, "path": str(placed), "changed": changed,
                            "copied": placed != src, "copy": how, "errors": report.errors, "dropped": dropped,
                            "fatal": report.fatal})
        if new_info != info:
            if info_path.exists():
                fileio.atomic_copy(info_path, info_path.with_name(info_path.name + ".bak"))
            fileio.atomic_write_text(info_path, fileio.dumps_json(new_info, indent=2) + "\n")
        return new_info

    with fileio.locked(info_path):
        update(fileio.read_json(info_path, default={}))
    return results
