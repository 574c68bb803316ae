"""Names, path arguments and printed commands of the data tasks.

* :func:`dataset_name`: a dataset / file name LLaMA-Factory and every OS accept. Letters of any
  script are kept (``中文`` stays ``中文``); a name with nothing usable left (``///``) is refused
  instead of silently becoming a default that collides with the next one.
* :func:`split_paths`: the ``FILE`` argument of data.check / data.register. Several files may be
  joined with commas, but a file whose own name holds a comma is taken whole.
* :func:`command`: a command line to print after ``next:``, each argument quoted for the shell
  that runs it (POSIX quoting, or Windows' rules on Windows).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from finetune.errors import UserError

# Anything but letters / digits of any script, "_", "." and "-" becomes "-". Commas matter most:
# LLaMA-Factory splits its `dataset` argument on them.
_UNSAFE_RE = re.compile(r"[^\w.\-]+")
_WINDOWS_RESERVED = frozenset({"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                               *(f"LPT{i}" for i in range(1, 10))})


def dataset_name(wanted: str, max_len: int = 80, what: str = "--name") -> str:
    """``wanted`` made safe for a dataset name and a file name, or a :class:`UserError`."""
    name = _UNSAFE_RE.sub("-", wanted).strip("-._")[:max_len].strip("-._")
    if not name:
        raise UserError(f"{what} {wanted!r} has no letter or digit left once made safe for a file name",
                        fix=f"pass {what} with letters or digits (any script), e.g. {what} chats")
    if name.split(".")[0].upper() in _WINDOWS_RESERVED:
        name = f"{name}-data"  # CON.jsonl cannot be created on Windows
    return name


def split_paths(file: str, files: Iterable[str] | None = None) -> list[str]:
    """``file`` split at commas unless it names an existing file as a whole; then ``files``."""
    out: list[str] = []
    if file:
        if "," in file and not Path(file).expanduser().exists():
            parts = [p for p in file.split(",") if p]
            missing = [p for p in parts if not Path(p).expanduser().exists()]
            if missing:
                raise UserError(f"no such file: {missing[0]} (read {file!r} as {len(parts)} comma-separated paths)",
                                where=missing[0],
                                fix="check the path; a file whose name holds a comma can be passed whole "
                                    "(--files 'my,file.jsonl')")
            out += parts
        else:
            out.append(file)
    out += [f for f in files or [] if f]
    return out


def command(args: Sequence[str | Path]) -> str:
    """``args`` as one command line, quoted for this platform's shell."""
    parts = [str(a) for a in args]
    if sys.platform == "win32":
        return subprocess.list2cmdline(parts)
    return shlex.join(parts)


def files_args(task: str, paths: Sequence[str | Path]) -> list[str]:
    """``invoke TASK FILE[,FILE...]``; files whose names hold commas go in ``--files``."""
    paths = [str(p) for p in paths]
    plain = [p for p in paths if "," not in p]
    commas = [p for p in paths if "," in p]
    args = ["invoke", task]
    if plain:
        args.append(",".join(plain))
        for p in commas:
            args += ["--files", p]
    elif commas:
        args.append(commas[0])
        for p in commas[1:]:
            args += ["--files", p]
    return args


def data_folder(folder: Path) -> Path:
    """``folder`` (the data dir), refused with a message when a file or a non-folder holds that path."""
    for parent in (folder, *folder.parents):
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"this is a file, not a folder, so the data dir {folder} cannot be made",
                                where=str(parent),
                                fix="pass --data-dir with a folder (or set FINETUNE_DATA_DIR), or move that file away")
            break
    return folder


def input_file(path: Path, what: str = "a ChatML .jsonl file") -> Path:
    """``path`` when it is a readable regular file, else a :class:`UserError` saying what it is."""
    if path.is_dir():
        raise UserError("this is a folder, not a file", where=str(path), fix=f"pass the path of {what}")
    if not path.is_file():
        raise UserError(f"no such file: {path}", where=str(path), fix=f"pass the path of {what}")
    return path

