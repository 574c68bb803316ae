"""The light core must import without torch, transformers or llamafactory (and fast)."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import finetune

HEAVY = ("torch", "transformers", "llamafactory", "datasets", "peft", "gradio")
# Modules that train or infer (allowed to import heavy packages, but only inside functions).
ROOT = Path(__file__).resolve().parents[2]


def light_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(finetune.__path__, "finetune."):
        names.append(info.name)
    return sorted(names)


def test_every_module_imports_without_heavy_packages():
    mods = light_modules()
    assert "finetune.layout" in mods and "finetune.env.doctor" in mods
    code = (
        "import importlib, sys\n"
        f"mods = {mods!r}\n"
        "for m in mods:\n"
        "    importlib.import_module(m)\n"
        f"heavy = [h for h in {HEAVY!r} if h in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"heavy packages imported at module level: {out.stdout.strip()}"


def test_invoke_list_is_light():
    code = (
        "import sys, runpy\n"
        "sys.argv = ['invoke', '--list']\n"
        "from invoke.main import program\n"
        "try:\n    program.run(exit=False)\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY=' + ','.join(h for h in {HEAVY!r} if h in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert "doctor" in out.stdout and "data.check" in out.stdout, out.stdout + out.stderr
    assert "HEAVY=\n" in out.stdout or out.stdout.rstrip().endswith("HEAVY="), out.stdout
