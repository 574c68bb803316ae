"""Where everything lives on disk: one object, built at the entry point and passed down.

Defaults (relative to the project root):

    dataset/llamafactory/                    ChatML JSONL + dataset_info.json
    finetune/outputs/llamafactory/<run_id>   one folder per training run
    finetune/logs/llamafactory/<run_id>      logs of that run (Web UI, trainer)
    finetune/state/llamaboard/               the Web UI's own state folders
    finetune/cache/models/                   models made on the spot (tiny models)

Every folder can be overridden by a flag (passed to :meth:`Layout.from_env`) or an environment
variable (``FINETUNE_ROOT``, ``FINETUNE_DATA_DIR``, ``FINETUNE_OUTPUTS_DIR``,
``FINETUNE_LOGS_DIR``, ``FINETUNE_STATE_DIR``, ``FINETUNE_MODELS_DIR``).
Folders are created on demand, never on import.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path

ENV_VARS = {
    "root": "FINETUNE_ROOT",
    "data_dir": "FINETUNE_DATA_DIR",
    "outputs_dir": "FINETUNE_OUTPUTS_DIR",
    "logs_dir": "FINETUNE_LOGS_DIR",
    "state_dir": "FINETUNE_STATE_DIR",
    "models_dir": "FINETUNE_MODELS_DIR",
}

DEFAULTS = {
    "data_dir": Path("dataset", "llamafactory"),
    "outputs_dir": Path("finetune", "outputs", "llamafactory"),
    "logs_dir": Path("finetune", "logs", "llamafactory"),
    "state_dir": Path("finetune", "state", "llamaboard"),
    "models_dir": Path("finetune", "cache", "models"),
}

RUN_ID_RE = re.compile(r"^\d{8}-\d{6}(-[\w.-]+)?$")
_SLUG_RE = re.compile(r"[^\w.-]+")  # Unicode letters and digits stay: a run named 客服-v1 keeps its name


def find_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` that holds this kit (pyproject + finetune/)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "finetune").is_dir():
            return folder
    return here


def slugify(text: str, max_len: int = 40) -> str:
    """A name safe in a file name on every OS: letters and digits of any script (NFC, as macOS and
    Windows store them), ``.``, ``_``, ``-``."""
    import unicodedata

    slug = _SLUG_RE.sub("-", unicodedata.normalize("NFC", text)).strip("-._")
    return slug[:max_len] or "run"


def new_run_id(name: str = "", now: datetime | None = None) -> str:
    """A sortable run id: ``YYYYMMDD-HHMMSS[-name]`` (local time, lexical order = time order)."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{slugify(name)}" if name else stamp


@dataclass(frozen=True)
class Layout:
    """The kit's folders. Build it once (``Layout.from_env()``) and pass it down."""

    root: Path
    data_dir: Path
    outputs_dir: Path
    logs_dir: Path
    state_dir: Path
    models_dir: Path

    @classmethod
    def from_env(
        cls,
        root: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: str | Path | None,
    ) -> Layout:
        """Defaults, then environment variables, then explicit overrides (flags) win."""
        env = os.environ if env is None else env
        root_value = root or env.get(ENV_VARS["root"])
        base = Path(root_value).expanduser().resolve() if root_value else find_root()
        values: dict[str, Path] = {"root": base}
        for key, default in DEFAULTS.items():
            chosen = overrides.get(key) or env.get(ENV_VARS[key])
            path = Path(chosen).expanduser() if chosen else default
            values[key] = path if path.is_absolute() else (base / path)
        unknown = set(overrides) - set(DEFAULTS)
        if unknown:
            raise TypeError(f"unknown layout folder(s): {sorted(unknown)}")
        return cls(**values)

    # Paths inside the layout -------------------------------------------------------------
    @property
    def dataset_info(self) -> Path:
        return self.data_dir / "dataset_info.json"

    def run_dir(self, run_id: str) -> Path:
        return self.outputs_dir / run_id

    def log_dir(self, run_id: str) -> Path:
        return self.logs_dir / run_id

    @property
    def webui_cache_dir(self) -> Path:
        """LLaMA-Factory's ``llamaboard_cache`` (user_config.yaml)."""
        return self.state_dir / "llamaboard_cache"

    @property
    def webui_config_dir(self) -> Path:
        """LLaMA-Factory's ``llamaboard_config`` (saved argument sets for "Load arguments")."""
        return self.state_dir / "llamaboard_config"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "webui.pid.json"

    @property
    def tiny_model_dir(self) -> Path:
        return self.models_dir / "tiny-qwen2"

    def new_run(self, name: str = "", now: datetime | None = None) -> str:
        """A fresh run id whose run folder does not exist yet."""
        run_id = new_run_id(name, now)
        candidate, n = run_id, 2
        while self.run_dir(candidate).exists() or self.log_dir(candidate).exists():
            candidate, n = f"{run_id}-{n}", n + 1
        return candidate

    def ensure(self, *paths: Path) -> None:
        """Create the given folders (default: the three pipeline folders) on demand."""
        for path in paths or (self.data_dir, self.outputs_dir, self.logs_dir):
            path.mkdir(parents=True, exist_ok=True)

    def as_dict(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}
