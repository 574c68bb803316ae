"""``invoke doctor``: is this machine ready to fine-tune with LLaMA-Factory? Each check says
ok / warn / fail, what it saw, and the command that fixes it. Never installs anything.

``fast=True`` reads package metadata only (no torch import, well under a second); the full run
also imports the stack in a child Python, so a broken wheel set is diagnosed, not crashed on.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from finetune.env import platforms
from finetune.layout import Layout
from finetune.net import port_free, port_owner

OK, WARN, FAIL = "ok", "warn", "fail"
DEFAULT_PORT = 7860


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def check_python() -> Check:
    v = platform.python_version()
    if platforms.python_ok():
        return Check("python", OK, f"Python {v} ({sys.executable})")
    return Check("python", FAIL, f"Python {v}; LLaMA-Factory {platforms.LLAMAFACTORY_VERSION} needs >= 3.11",
                 "install Python 3.11 or newer, then re-run: python -m nox -s smoke")


def check_platform(system: str | None = None, machine: str | None = None) -> Check:
    """One clear message where no torch set exists (Intel macOS, Windows ARM64, ...), naming what works."""
    why = platforms.unsupported_reason(system, machine)
    if why:
        return Check("platform", FAIL, why, platforms.WHAT_WORKS)
    return Check("platform", OK, f"{system or platform.system()} {machine or platform.machine()}: torch set "
                 f"'{platforms.detect_flavour(system, machine)}'")


def check_llamafactory() -> Check:
    have = _version("llamafactory")
    fix = platforms.install_command()
    if have is None:
        return Check("llamafactory", FAIL, "llamafactory is not installed in this Python", fix)
    if have != platforms.LLAMAFACTORY_VERSION:
        return Check("llamafactory", WARN,
                     f"llamafactory {have}; this kit is tested with {platforms.LLAMAFACTORY_VERSION}",
                     f"python -m pip install llamafactory=={platforms.LLAMAFACTORY_VERSION}")
    return Check("llamafactory", OK, f"llamafactory {have}")


def check_pins() -> list[Check]:
    out = []
    for dist, (low, high) in platforms.LLAMAFACTORY_PINS.items():
        have = _version(dist)
        spec = SpecifierSet(",".join(s for s in (low, high) if s))
        if have is None:
            out.append(Check(dist, WARN, f"{dist} not installed (LLaMA-Factory needs {spec})",
                             platforms.install_command()))
            continue
        try:
            inside = Version(have) in spec
        except InvalidVersion:
            inside = False
        if inside:
            out.append(Check(dist, OK, f"{dist} {have} (LLaMA-Factory pins {spec})"))
        else:
            out.append(Check(dist, FAIL, f"{dist} {have} is outside LLaMA-Factory's pin {spec}",
                             f'python -m pip install "{dist}{spec}"'))
    return out


METRICS_DISTS = ("jieba", "nltk", "rouge-chinese")  # LLaMA-Factory's `metrics` extra


def check_metrics() -> Check:
    """Evaluate & Predict with "Save predictions" (predict_with_generate) needs LLaMA-Factory's metrics extra."""
    missing = [d for d in METRICS_DISTS if _version(d) is None]
    if _version("llamafactory") is None or not missing:
        return Check("metrics", OK, "jieba, nltk, rouge-chinese: Evaluate & Predict can score predictions"
                     if not missing else "not needed without llamafactory")
    return Check("metrics", WARN, f"{', '.join(missing)} not installed: the Web UI's Evaluate & Predict stops "
                 "with PackageNotFoundError when 'Save predictions' is on",
                 "python -m pip install " + " ".join(METRICS_DISTS))


def check_torch_metadata() -> Check:
    vers = {d: _version(d) for d in ("torch", "torchvision", "torchaudio")}
    if platforms.detect_flavour() == "unsupported":
        return Check("torch set", WARN, ", ".join(f"{k} {v or 'missing'}" for k, v in vers.items())
                     + "; no verified set for this platform (see the platform check)")
    ts = platforms.torch_set()
    shown = ", ".join(f"{k} {v or 'missing'}" for k, v in vers.items())
    fix = platforms.install_command()
    if vers["torch"] is None:
        return Check("torch set", FAIL, "torch is not installed", fix)
    missing = [k for k, v in vers.items() if v is None]
    if missing:
        return Check("torch set", FAIL,
                     f"{shown}: LLaMA-Factory imports {' and '.join(missing)} at start-up", fix)
    expected = {"torch": ts.torch, "torchvision": ts.torchvision, "torchaudio": ts.torchaudio}
    if all((vers[k] or "").split("+")[0] == expected[k] for k in expected):
        return Check("torch set", OK, f"{shown} (the verified '{ts.flavour}' set)")
    return Check("torch set", WARN, f"{shown}; verified set for '{ts.flavour}': "
                 + ", ".join(ts.requirements()) + " (run without --fast to test that they load together)", fix)


# The child probe: imports the stack and reports, one JSON line. Never raises.
_PROBE = r"""
import json, sys
out = {}
def attempt(key, fn):
    try:
        out[key] = {"ok": True, "value": fn()}
    except BaseException as exc:
        chain, e = [], exc  # the cause too: torchaudio wraps "libc10_cuda.so: cannot open" in "Could not load"
        while e is not None and len(chain) < 3:
            chain.append(f"{type(e).__name__}: {e}")
            e = e.__cause__ or e.__context__
        out[key] = {"ok": False, "error": " <- ".join(chain)[:900]}
def _torch():
    import torch
    info = {"version": torch.__version__, "cuda": torch.cuda.is_available(), "devices": []}
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["devices"].append({"name": p.name, "memory_gb": round(p.total_memory / 2**30, 1)})
        info["bf16"] = torch.cuda.is_bf16_supported()
    mps = getattr(torch.backends, "mps", None)
    info["mps"] = bool(mps and mps.is_available())
    return info
def _tv():
    import torchvision, torch
    torchvision.ops.nms(torch.zeros((1, 4)), torch.zeros(1), 0.5)
    return torchvision.__version__
def _ta():
    import torchaudio
    return torchaudio.__version__
def _tf():
    from transformers import PreTrainedModel
    import transformers
    return transformers.__version__
def _lf():
    import llamafactory
    from llamafactory.data import mm_plugin
    return llamafactory.__version__
attempt("torch", _torch)
if out["torch"]["ok"]:
    attempt("torchvision", _tv); attempt("torchaudio", _ta); attempt("transformers", _tf); attempt("llamafactory", _lf)
print("PROBE" + json.dumps(out))
"""


def run_probe(python: str = sys.executable, timeout: float = 180) -> dict:
    """Import the training stack in a child Python; a dict of component -> ok/value/error."""
    env = {**os.environ, "DISABLE_VERSION_CHECK": "1", "PYTHONIOENCODING": "utf-8"}
    try:
        proc = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, encoding="utf-8",
                              errors="replace", timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"_probe": {"ok": False, "error": f"importing the stack took more than {timeout:.0f} s"}}
    for line in proc.stdout.splitlines():
        if line.startswith("PROBE"):
            return json.loads(line[5:])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"_probe": {"ok": False, "error": f"the probe exited {proc.returncode}: " + " | ".join(tail)}}


# What a log shows when torch, torchvision and torchaudio are not one set (guide 1.7 / 8.9).
TORCH_SET_MARKERS = ("torchvision::nms does not exist", "libc10_cuda.so", "libtorch_cuda.so", "_torchaudio.abi3.so")


def torch_set_failure(lines: list[str]) -> str | None:
    """The first error line that shows the torch / torchvision / torchaudio mismatch, if any."""
    for line in lines:
        s = line.strip()
        if any(m in s for m in TORCH_SET_MARKERS) and s.split(":", 1)[0].endswith(("Error", "Exception")):
            return s
    return None


def diagnose(probe: dict) -> list[Check]:
    """Turn the real import errors (docs/field-notes.md#torch-sets) into a diagnosis with the fix."""
    fix = platforms.install_command()
    if "_probe" in probe:
        return [Check("torch set", FAIL, probe["_probe"]["error"], fix)]
    torch = probe.get("torch", {})
    if not torch.get("ok"):
        return [Check("torch set", FAIL, f"import torch failed: {torch.get('error')}", fix)]
    tv = torch["value"]["version"]
    checks: list[Check] = []
    problems = []
    for comp in ("torchvision", "torchaudio"):
        res = probe.get(comp, {})
        if res.get("ok"):
            continue
        err = res.get("error", "")
        if "torchvision::nms" in err:
            why = f"torchvision was built for another torch than {tv} (operator torchvision::nms does not exist)"
        elif "libc10_cuda" in err or "libtorch_cuda" in err:
            why = f"{comp} is a CUDA build but torch {tv} is CPU-only (it looks for libc10_cuda.so)"
        elif "_torchaudio" in err or "undefined symbol" in err:
            why = (f"{comp}'s compiled extension was built for another torch than {tv} "
                   f"({err.split(': ', 1)[-1][:160]})")
        elif "No module named" in err:
            why = f"{comp} is not installed; LLaMA-Factory imports it at start-up"
        else:
            why = f"{comp} does not load beside torch {tv}: {err}"
        problems.append(why)
    if problems:
        checks.append(Check("torch set", FAIL, "; ".join(problems) + ". This is the torch / torchvision / "
                            "torchaudio mismatch: install the three as one verified set",
                            platforms.reinstall_set_command()))
    else:
        checks.append(Check("torch set", OK, f"torch {tv}, torchvision {probe['torchvision']['value']}, "
                            f"torchaudio {probe['torchaudio']['value']} load together"))
    for comp in ("transformers", "llamafactory"):
        res = probe.get(comp)
        if res and not res.get("ok") and not problems:
            checks.append(Check(f"import {comp}", FAIL, res["error"], fix))
        elif res and res.get("ok"):
            checks.append(Check(f"import {comp}", OK, f"{comp} {res['value']} imports"))
    checks.append(_accelerator(torch["value"]))
    return checks


def _accelerator(info: dict) -> Check:
    if info.get("cuda"):
        devs = "; ".join(f"{d['name']} {d['memory_gb']} GiB" for d in info["devices"])
        return Check("accelerator", OK, f"CUDA: {devs}; bf16 {'yes' if info.get('bf16') else 'no'}")
    if info.get("mps"):
        return Check("accelerator", OK, "Apple MPS (bf16 limited; training uses fp32/fp16)")
    return Check("accelerator", WARN, "CPU only: fine for the tiny demo model, slow for real models",
                 "on a machine with an NVIDIA GPU: install the driver, then python -m nox -s cuda")


def check_quantization(probe: dict | None) -> list[Check]:
    cuda = bool(probe and probe.get("torch", {}).get("ok") and probe["torch"]["value"].get("cuda"))
    out = []
    bnb = _version("bitsandbytes")
    if bnb:
        out.append(Check("bitsandbytes", OK if cuda or probe is None else WARN,
                         f"bitsandbytes {bnb}" + ("" if cuda or probe is None else "; QLoRA needs a CUDA device")))
    else:
        out.append(Check("bitsandbytes", WARN, "not installed: QLoRA (--quantization-bit 4/8) is unavailable; "
                         "it needs a CUDA device", 'python -m pip install "bitsandbytes>=0.43"'))
    fa = _version("flash-attn") or _version("flash_attn")
    if fa:
        out.append(Check("flash-attn", OK, f"flash-attn {fa} (needs CUDA, Ampere or newer)"))
    else:
        out.append(Check("flash-attn", WARN, "not installed: training uses sdpa attention (fine); flash-attn "
                         "needs CUDA, an Ampere+ GPU and a matching compiler",
                         "python -m pip install flash-attn --no-build-isolation"))
    return out


def check_port(port: int) -> Check:
    if not 1 <= port <= 65535:
        return Check("webui port", FAIL, f"--port {port} is not a TCP port (1 to 65535)",
                     "invoke doctor --port 7860")
    if port_free("127.0.0.1", port):
        return Check("webui port", OK, f"port {port} is free on 127.0.0.1")
    return Check("webui port", WARN, f"port {port} is taken by {port_owner(port)}; the launcher will move "
                 "to the next free port", f"invoke webui --port {port + 1}  (or stop that process)")


def _existing_parent(path: Path) -> Path:
    for p in (path, *path.parents):
        if p.exists():
            return p
    return path.anchor and Path(path.anchor) or Path.cwd()


def check_disk(layout: Layout, warn_gb: float = 10, fail_gb: float = 1) -> Check:
    where = _existing_parent(layout.outputs_dir)
    free = shutil.disk_usage(where).free / 2**30
    detail = f"{free:.1f} GiB free at {where}"
    if free < fail_gb:
        return Check("disk", FAIL, detail + "; a LoRA run of a 7B model writes several GiB",
                     "free space, or point runs elsewhere: "
                     + platforms.env_command("FINETUNE_OUTPUTS_DIR", "/big/disk", "invoke train ..."))
    if free < warn_gb:
        return Check("disk", WARN, detail, "free space or set FINETUNE_OUTPUTS_DIR to a larger disk")
    return Check("disk", OK, detail)


def check_writable(layout: Layout) -> Check:
    bad = []
    for path in (layout.data_dir, layout.outputs_dir, layout.logs_dir, layout.state_dir):
        target = _existing_parent(path)
        try:
            with tempfile.TemporaryFile(dir=target):
                pass
        except OSError as exc:
            bad.append(f"{path} ({exc.strerror})")
    if bad:
        return Check("layout folders", FAIL, "not writable: " + ", ".join(bad),
                     "fix the permissions, or choose other folders with FINETUNE_ROOT / FINETUNE_OUTPUTS_DIR")
    return Check("layout folders", OK, f"writable under {layout.root}")


def check_long_paths(system: str | None = None) -> Check:
    if (system or platform.system()) != "Windows":
        return Check("long paths", OK, "not Windows: no 260-character path limit")
    try:
        import winreg  # type: ignore[import-not-found]

        key = winreg.OpenKey(winreg.HKEY_LOCAL_MACHINE, r"SYSTEM\CurrentControlSet\Control\FileSystem")
        enabled = winreg.QueryValueEx(key, "LongPathsEnabled")[0] == 1
    except OSError:
        enabled = False
    if enabled:
        return Check("long paths", OK, "Windows long paths are enabled")
    return Check("long paths", WARN, "Windows long paths are off: checkpoint paths over 260 characters fail",
                 'run as administrator: reg add HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem '
                 '/v LongPathsEnabled /t REG_DWORD /d 1 /f')


def run_doctor(layout: Layout, fast: bool = False, port: int = DEFAULT_PORT,
               probe: Callable[[], dict] = run_probe) -> list[Check]:
    """All checks, in the order a person fixes them."""
    checks = [check_python(), check_platform(), check_llamafactory()]
    probe_result = None
    if fast:
        checks.append(check_torch_metadata())
        checks.append(Check("accelerator", OK, "not probed (--fast); run `invoke doctor` without --fast"))
    else:
        probe_result = probe()
        checks += diagnose(probe_result)
    checks += check_pins()
    checks.append(check_metrics())
    checks += check_quantization(probe_result)
    checks += [check_port(port), check_disk(layout), check_writable(layout), check_long_paths()]
    return checks


def as_json(checks: list[Check]) -> str:
    """The contract: a list of checks, each with name, status (ok / warn / fail), detail and fix."""
    return json.dumps([asdict(c) for c in checks], indent=2, ensure_ascii=False)


def render(checks: list[Check]) -> None:
    from rich.console import Console
    from rich.table import Table

    style = {OK: "green", WARN: "yellow", FAIL: "bold red"}
    table = Table(title="finetune doctor", show_lines=False)
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.name, f"[{style[c.status]}]{c.status}[/]", c.detail, c.fix)
    console = Console()
    console.print(table)
    fails = [c for c in checks if c.status == FAIL]
    if fails:
        console.print(f"[bold red]{len(fails)} check(s) failed.[/] Fix them in order, then: invoke doctor")
    else:
        console.print("[green]Ready.[/] Next: invoke demo   (or: invoke data.check dataset/llamafactory/*.jsonl)")
