"""Shared fixtures. The tiny model is made once per test session (seconds) and cached."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# LLaMA-Factory's own demo datasets (Apache-2.0, unmodified; source and licence beside them)
LF_DEMO = Path(__file__).resolve().parent / "fixtures" / "llamafactory-demo"


def pytest_configure(config):
    os.environ.setdefault("DISABLE_VERSION_CHECK", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="session")
def lf_demo_dir() -> Path:
    """LLaMA-Factory's own demo datasets (Apache-2.0), inputs nobody here wrote."""
    if not LF_DEMO.is_dir():
        pytest.fail(f"missing {LF_DEMO}: it is part of the repository (git checkout tests/fixtures)")
    return LF_DEMO


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A deterministic tiny Qwen2 model + tokenizer (needs the training stack)."""
    pytest.importorskip("torch")
    from finetune.models.tiny import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2")


@pytest.fixture()
def layout(tmp_path):
    """A layout rooted in a temporary folder (our defaults below it)."""
    from finetune.layout import Layout

    return Layout.from_env(root=tmp_path, env={})

