"""Shared plumbing for entry points (tasks.py, scripts): user errors become one message + exit code.

:func:`safe_console` runs once at the entry (tasks.py): output never crashes on a console or pipe
that cannot encode a character (cp1252 on Windows pipes, docs/field-notes.md#windows).
:func:`guarded` turns every failure a user can cause into one message and a non-zero exit code:
:class:`UserError`, a closed output pipe (``--json | head -1``), a file or folder that cannot be
written (permissions, read-only file system, full disk) and Ctrl-C.
"""

from __future__ import annotations

import codecs
import errno
import json
import os
import sys
from collections.abc import Callable
from typing import TypeVar

from finetune.errors import UserError

T = TypeVar("T")
ESCAPE = "finetune-escape"
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader went away
_WRITE_ERRNOS = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
                 errno.EROFS: "read-only file system", errno.ENOSPC: "no space left on the device"}


def _escape(err: UnicodeError) -> tuple[str, int]:
    """``\\uXXXX`` for every character the stream cannot encode (surrogate pairs above U+FFFF): readable,
    and a JSON document stays valid JSON that decodes to the original text."""
    out = []
    for ch in err.object[err.start:err.end]:
        cp = ord(ch)
        if cp > 0xFFFF:
            cp -= 0x10000
            out.append(f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}")
        else:
            out.append(f"\\u{cp:04x}")
    return "".join(out), err.end


codecs.register_error(ESCAPE, _escape)


def safe_console() -> None:
    """Reconfigure stdout / stderr once so an unencodable character is escaped, never an exception; and
    turn a closed pipe or an unwritable path that escapes :func:`guarded` into a clean message."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure") and codecs.lookup(stream.encoding or "ascii").name != "utf-8":
            try:
                stream.reconfigure(errors=ESCAPE)
            except (ValueError, OSError):  # detached or closed: nothing to protect
                pass
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _excepthook


def _pipe_closed(exc: BaseException) -> bool:
    """The reader of stdout went away: BrokenPipeError, or on Windows EINVAL from a write (no file name)."""
    return isinstance(exc, BrokenPipeError) or (
        os.name == "nt" and isinstance(exc, OSError) and exc.errno == errno.EINVAL and exc.filename is None)


def _excepthook(kind, value, tb) -> None:
    """Backstop for output printed after :func:`guarded` returned (the interpreter then exits 1)."""
    if _pipe_closed(value):
        _silence_stdout()
        return
    if isinstance(value, OSError) and value.errno in _WRITE_ERRNOS:
        print(_write_error(value).render(), file=sys.stderr)
        return
    sys.__excepthook__(kind, value, tb)


def _silence_stdout() -> None:
    """The reader is gone: point stdout at the null device so the final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _write_error(exc: OSError) -> UserError:
    """A path the user cannot write (or read): what, where, and how to work elsewhere."""
    from finetune.env.platforms import env_command

    why = _WRITE_ERRNOS.get(exc.errno, exc.strerror or "cannot write")
    verb = "write" if exc.errno in (errno.EROFS, errno.ENOSPC) else "access"
    fix = ("free space on that disk, or work elsewhere: " if exc.errno == errno.ENOSPC
           else "fix its permissions, or work in a writable folder: ")
    return UserError(f"{why} (cannot {verb} this path)", where=str(exc.filename or ""),
                     fix=fix + env_command("FINETUNE_ROOT", "/a/writable/folder", "invoke ..."))


def guarded(fn: Callable[[], T], as_json: bool = False) -> T:
    """Run ``fn``; a failure the user can fix prints one clear message (or JSON) and exits non-zero.
    Entry scripts that call it (run_finetune.py, the launcher module, ...) get :func:`safe_console` too."""
    safe_console()
    try:
        return fn()
    except UserError as err:
        _fail(err, as_json)
    except OSError as exc:
        if _pipe_closed(exc):  # `invoke ... --json | head -1`: the reader has what it wanted
            _silence_stdout()
            raise SystemExit(EXIT_PIPE) from None
        if exc.errno not in _WRITE_ERRNOS:
            raise
        _fail(_write_error(exc), as_json)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None


def _fail(err: UserError, as_json: bool):
    try:
        if as_json:
            print(json.dumps(err.to_dict(), ensure_ascii=False))
        else:
            print(err.render(), file=sys.stderr)
    except BrokenPipeError:
        _silence_stdout()
    raise SystemExit(err.exit_code) from None
