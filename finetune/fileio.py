"""One place for reading and writing user files: atomic, locked, bounded, strict.

* :func:`atomic_write_text` / :func:`atomic_write_bytes`: temp file in the same folder, fsync,
  ``os.replace``; the target's mode is kept (a new file gets ``0o666 & ~umask``); on Windows a
  replace refused because another process holds the target open is retried for a short while.
* :func:`atomic_open` / :func:`atomic_copy`: the same for a large file streamed into place.
* :func:`locked`: a cross-process lock beside the file (``filelock``), so a read-modify-write is
  serialised across processes; :func:`update_json` is that read-modify-write for a JSON file.
* :func:`read_json` / :func:`read_yaml`: size-capped reads that turn a broken file into a
  :class:`~finetune.errors.UserError` naming file and line; YAML is loaded with aliases refused
  (no "billion laughs").
* :func:`dumps_json`: strict JSON text (NaN / Infinity become ``null``).
* :func:`tail_lines`: the last lines of a (possibly huge) log, reading from the end only.

Light: standard library, pyyaml, orjson and filelock only.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from finetune.errors import UserError

MAX_JSON_BYTES = 64 * 1024 * 1024
MAX_YAML_BYTES = 4 * 1024 * 1024
LOCK_TIMEOUT_S = 60.0
_REPLACE_RETRY_S = 2.0


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _target_mode(path: Path) -> int:
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_current_umask()


def _replace(src: str, dst: Path) -> None:
    deadline = time.monotonic() + _REPLACE_RETRY_S
    while True:
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            # Windows refuses a replace while another process has the target open (a reader,
            # an antivirus scan): retry briefly. Elsewhere a PermissionError is final.
            if sys.platform != "win32" or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never a torn one."""
    with atomic_open(path) as fh:
        fh.write(data)


def atomic_write_text(path: Path | str, text: str) -> None:
    """:func:`atomic_write_bytes` for UTF-8 text (``\\n`` line ends on every OS)."""
    atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_open(path: Path | str, keep_if: Callable[[Path], bool] | None = None) -> Iterator[Any]:
    """A binary file handle for streaming a large file into place: written to a unique temp file
    beside ``path``, moved over it (mode kept) only when the ``with`` block ends without an error
    and ``keep_if(temp path)`` (when given) returns true; otherwise the temp file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _target_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if keep_if is not None and not keep_if(Path(tmp)):
            os.unlink(tmp)
            return
        os.chmod(tmp, mode)
        _replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_copy(src: Path | str, dst: Path | str) -> None:
    """Copy ``src`` over ``dst`` atomically (streamed; ``dst``'s mode kept when it exists)."""
    import shutil

    with open(src, "rb") as fin, atomic_open(dst) as fout:
        shutil.copyfileobj(fin, fout, 1 << 20)


def lock_path(path: Path | str) -> Path:
    """The lock file that guards ``path`` (``.<name>.lock`` beside it)."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def locked(path: Path | str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the cross-process lock of ``path`` (blocking, at most ``timeout`` seconds)."""
    from filelock import FileLock, Timeout

    lp = lock_path(path)
    lp.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lp), timeout=timeout)
    try:
        with lock:
            yield
    except Timeout:
        raise UserError(f"another process has held the lock on {Path(path).name} for {timeout:.0f} s",
                        where=str(lp),
                        fix=f"wait for the other task to finish; if none is running, delete {lp}") from None


def _read_text(path: Path, cap: int) -> str:
    """The UTF-8 text of ``path``, refusing a file over ``cap`` bytes or one that is not UTF-8."""
    size = path.stat().st_size
    if size > cap:
        raise UserError(f"file is {size / 1e6:.1f} MB, over the {cap / 1e6:.0f} MB this reader accepts",
                        where=str(path), fix="check that this is the file you meant")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"not UTF-8 text ({err.reason} at byte {err.start})", where=str(path),
                        fix="save the file as UTF-8") from None


def same_bytes(a: Path | str, b: Path | str) -> bool:
    """Whether two files hold the same bytes (streamed; sizes compared first)."""
    a, b = Path(a), Path(b)
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            ca, cb = fa.read(1 << 20), fb.read(1 << 20)
            if ca != cb:
                return False
            if not ca:
                return True


def parse_json(text: str, where: str) -> Any:
    """``json.loads`` with a :class:`UserError` naming ``where:line`` on a syntax error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"not valid JSON: {err.msg} (column {err.colno})", where=f"{where}:{err.lineno}",
                        fix=f"repair the JSON at line {err.lineno}, or restore the file from a backup") from None


def read_json(path: Path | str, default: Any = None, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Read a JSON file; ``default`` when it does not exist; a broken one raises :class:`UserError`."""
    path = Path(path)
    if not path.exists():
        return default
    text = _read_text(path, max_bytes)
    if not text.strip():
        return default
    return parse_json(text, str(path))


class _NoAliasLoader:
    """Built lazily: a SafeLoader that refuses anchors and aliases (bounded work on any input)."""

    cls: type | None = None

    @classmethod
    def get(cls) -> type:
        if cls.cls is None:
            import yaml

            class Loader(yaml.SafeLoader):
                def compose_node(self, parent, index):  # type: ignore[override]
                    if self.check_event(yaml.AliasEvent):
                        event = self.peek_event()
                        raise yaml.composer.ComposerError(
                            None, None, "YAML aliases are not accepted here", event.start_mark)
                    return super().compose_node(parent, index)

            cls.cls = Loader
        return cls.cls


def read_yaml(path: Path | str, default: Any = None, max_bytes: int = MAX_YAML_BYTES) -> Any:
    """Safe-load a YAML file with a size cap and no aliases; a broken one raises :class:`UserError`."""
    import yaml

    path = Path(path)
    if not path.exists():
        return default
    text = _read_text(path, max_bytes)
    loader = _NoAliasLoader.get()
    if "&" not in text and "*" not in text:  # no anchor, no alias possible: libyaml's safe loader is
        loader = getattr(yaml, "CSafeLoader", loader)  # as safe and ~10x faster
    try:
        data = yaml.load(text, Loader=loader)  # noqa: S506
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise UserError(f"not valid YAML: {problem}", where=f"{path}{line}",
                        fix="repair the YAML, or delete the file so it is written anew") from None
    return default if data is None else data


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def dumps_json(obj: Any, indent: int | None = None) -> str:
    """Strict JSON text: NaN / Infinity become ``null``; non-ASCII kept as is."""
    return json.dumps(_finite(obj), ensure_ascii=False, indent=indent, allow_nan=False, default=str)


def update_json(path: Path | str, fn: Callable[[Any], Any], default: Any = None, indent: int = 2) -> Any:
    """Locked read-modify-write of a JSON file: ``fn(current)`` returns the new content (written
    atomically, mode kept). Returns that content. Concurrent callers in other processes never lose
    each other's changes."""
    path = Path(path)
    with locked(path):
        current = read_json(path, default=default)
        new = fn(current)
        atomic_write_text(path, dumps_json(new, indent=indent) + "\n")
    return new


def tail_lines(path: Path | str, n: int = 1, max_bytes: int = 1 << 20) -> list[str]:
    """The last ``n`` complete lines of ``path`` (decoded as UTF-8), reading at most ``max_bytes``
    from the end: the cost does not grow with the file's length."""
    path = Path(path)
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        end = fh.tell()
        block, data = 8192, b""
        pos = end
        while pos > 0 and data.count(b"\n") <= n and end - pos < max_bytes:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            data = fh.read(step) + data
            block *= 2
    lines = data.split(b"\n")
    if pos > 0:
        lines = lines[1:]  # the first piece may be a partial line
    out = [ln.decode("utf-8", "replace").rstrip("\r") for ln in lines if ln.strip()]
    return out[-n:] if n else []
