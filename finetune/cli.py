"""Shared plumbing for entry points (tasks.py, scripts): user errors become one message + exit code."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TypeVar

from finetune.errors import UserError

T = TypeVar("T")


def guarded(fn: Callable[[], T], as_json: bool = False) -> T:
    """Run ``fn``; a :class:`UserError` prints one clear message (or JSON) and exits non-zero."""
    try:
        return fn()
    except UserError as err:
        if as_json:
            print(json.dumps(err.to_dict(), ensure_ascii=False))
        else:
            print(err.render(), file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None

