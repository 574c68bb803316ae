import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from finetune.env import doctor, platforms
from finetune.layout import Layout

ROOT = Path(__file__).resolve().parents[2]

# The real errors recorded in docs/field-notes.md#torch-sets for the CPU torch + index torchvision/torchaudio mismatch.
NMS_ERROR = "RuntimeError: operator torchvision::nms does not exist"
AUDIO_ERROR = ("OSError: libc10_cuda.so: cannot open shared object file: No such file or directory "
               "(.../torchaudio/lib/_torchaudio.abi3.so)")


def _probe(tv_ok=True, ta_ok=True, cuda=False):
    p = {"torch": {"ok": True, "value": {"version": "2.13.0+cpu", "cuda": cuda, "devices": [], "mps": False}}}
    p["torchvision"] = {"ok": True, "value": "0.28.0"} if tv_ok else {"ok": False, "error": NMS_ERROR}
    p["torchaudio"] = {"ok": True, "value": "2.11.0"} if ta_ok else {"ok": False, "error": AUDIO_ERROR}
    p["transformers"] = {"ok": tv_ok, "value": "5.6.0"} if tv_ok else {"ok": False, "error": "ImportError: x"}
    p["llamafactory"] = {"ok": tv_ok and ta_ok, "value": "0.9.5"} if tv_ok and ta_ok else {"ok": False, "error": "x"}
    return p


def test_diagnose_mismatch_names_both_causes_and_the_fix():
    checks = doctor.diagnose(_probe(tv_ok=False, ta_ok=False))
    torch_set = next(c for c in checks if c.name == "torch set")
    assert torch_set.status == doctor.FAIL
    assert "torchvision::nms" in torch_set.detail and "libc10_cuda" in torch_set.detail
    assert "2.13.0+cpu" in torch_set.detail
    assert "pip install" in torch_set.fix and "torchaudio==" in torch_set.fix
    # a plain install keeps a same-numbered build made for another torch: the fix removes the three first
    assert torch_set.fix.startswith("python -m pip uninstall -y torch torchvision torchaudio   then: ")


def test_diagnose_healthy_reports_versions_and_cpu():
    checks = {c.name: c for c in doctor.diagnose(_probe())}
    assert checks["torch set"].status == doctor.OK
    assert checks["accelerator"].status == doctor.WARN and "CPU" in checks["accelerator"].detail
    assert checks["import llamafactory"].detail.startswith("llamafactory 0.9.5")


def test_diagnose_cuda_device():
    probe = _probe(cuda=True)
    probe["torch"]["value"]["devices"] = [{"name": "NVIDIA H200", "memory_gb": 139.8}]
    probe["torch"]["value"]["bf16"] = True
    acc = next(c for c in doctor.diagnose(probe) if c.name == "accelerator")
    assert acc.status == doctor.OK and "H200" in acc.detail and "bf16 yes" in acc.detail


def test_probe_failure_is_a_diagnosis_not_a_crash():
    checks = doctor.diagnose({"_probe": {"ok": False, "error": "the probe exited -11"}})
    assert checks[0].status == doctor.FAIL and "-11" in checks[0].detail


def test_busy_port_is_reported_with_owner():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        check = doctor.check_port(port)
    assert check.status == doctor.WARN and str(port) in check.detail
    assert f"--port {port + 1}" in check.fix
    assert "PID" in check.detail or "did not say" in check.detail


def test_long_paths_only_matter_on_windows():
    assert doctor.check_long_paths("Linux").status == doctor.OK


@pytest.mark.skipif(os.name == "nt", reason="Windows ignores a folder's read-only bit (chmod 0o500)")
def test_unwritable_layout_fails(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    lay = Layout.from_env(root=tmp_path, env={}, outputs_dir=ro / "out", data_dir=ro / "d",
                          logs_dir=ro / "l", state_dir=ro / "s")
    try:
        check = doctor.check_writable(lay)
    finally:
        ro.chmod(0o700)
    if getattr(os, "geteuid", lambda: -1)() == 0:  # root writes anywhere; the check then passes truthfully
        assert check.status == doctor.OK
    else:
        assert check.status == doctor.FAIL and "not writable" in check.detail


def test_fast_doctor_json_contract_and_no_torch(tmp_path):
    code = (
        "import sys, json\n"
        "from finetune.env import doctor\nfrom finetune.layout import Layout\n"
        f"checks = doctor.run_doctor(Layout.from_env(root={str(tmp_path)!r}, env={{}}), fast=True)\n"
        "print(doctor.as_json(checks))\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert out.returncode == 0, out.stderr
    body, _, last = out.stdout.rpartition("TORCH")
    assert last.strip() == "False"
    checks = json.loads(body)
    assert isinstance(checks, list)
    names = {c["name"] for c in checks}
    assert {"python", "llamafactory", "torch set", "webui port", "disk", "layout folders"} <= names
    for c in checks:
        assert set(c) == {"name", "status", "detail", "fix"} and c["status"] in ("ok", "warn", "fail")
        if c["status"] == "fail":
            assert c["fix"], f"{c['name']} fails without a fix"


def test_flavours_per_platform():
    assert platforms.detect_flavour("Darwin", "arm64", env={}) == "macos"
    assert platforms.detect_flavour("Windows", "AMD64", env={}) == "windows"
    assert platforms.detect_flavour("Linux", "x86_64", env={}) == "linux-cuda"
    assert platforms.detect_flavour("Linux", "aarch64", env={}) == "linux-aarch64"
    assert platforms.detect_flavour("Linux", "x86_64", env={platforms.FLAVOUR_ENV: "linux-cpu"}) == "linux-cpu"
    for ts in platforms.TORCH_SETS.values():
        assert len(ts.requirements()) == 3 and all("==" in r for r in ts.requirements())
    assert "--index-url" in platforms.torch_set("linux-cpu").pip_args()
    assert platforms.torch_set("linux-cuda").pip_args("https://example.invalid/x")[-1] == "https://example.invalid/x"


@pytest.mark.parametrize("system,machine,words", [
    ("Darwin", "x86_64", "Intel macOS"), ("Windows", "ARM64", "Windows on ARM64"),
    ("Linux", "ppc64le", "Linux on ppc64le"), ("FreeBSD", "amd64", "FreeBSD on x86_64"),
])
def test_platforms_without_a_set_get_one_message_naming_what_works(system, machine, words):
    why = platforms.unsupported_reason(system, machine, env={})
    assert why and words in why and "What works instead" in why and "Apple-silicon" in why
    assert platforms.detect_flavour(system, machine, env={}) == "unsupported"
    check = doctor.check_platform(system, machine)
    assert check.status == doctor.FAIL and check.detail == why and check.fix == platforms.WHAT_WORKS
    # a chosen set is respected: the user knows better
    assert platforms.unsupported_reason(system, machine, env={platforms.FLAVOUR_ENV: "macos"}) is None


@pytest.mark.parametrize("system,machine", [("Linux", "x86_64"), ("Linux", "aarch64"), ("Darwin", "arm64"),
                                            ("Windows", "AMD64")])
def test_supported_platforms_pass(system, machine):
    assert platforms.unsupported_reason(system, machine, env={}) is None
    assert doctor.check_platform(system, machine).status == doctor.OK


def test_torch_set_on_a_platform_without_one_is_a_user_error(monkeypatch):
    from finetune.errors import UserError

    monkeypatch.setenv(platforms.PLATFORM_ENV, "Darwin/x86_64")
    monkeypatch.delenv(platforms.FLAVOUR_ENV, raising=False)
    with pytest.raises(UserError, match="Intel macOS"):
        platforms.torch_set()
    assert platforms.install_command() == platforms.WHAT_WORKS


def test_doctor_and_nox_say_the_same_on_intel_macos(tmp_path):
    env = {**os.environ, platforms.PLATFORM_ENV: "Darwin/x86_64", "PYTHONIOENCODING": "utf-8"}
    env.pop(platforms.FLAVOUR_ENV, None)
    doc = subprocess.run([sys.executable, "-m", "invoke", "doctor", "--fast", "--json"], cwd=ROOT, env=env,
                         capture_output=True, text=True, encoding="utf-8", timeout=60)
    check = next(c for c in json.loads(doc.stdout) if c["name"] == "platform")
    assert doc.returncode == 1 and check["status"] == "fail" and "Intel macOS" in check["detail"]
    nox = subprocess.run([sys.executable, "-m", "nox", "--envdir", str(tmp_path), "-s", "demo"], cwd=ROOT, env=env,
                         capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert nox.returncode == 1, nox.stdout + nox.stderr
    out = nox.stdout + nox.stderr
    assert check["detail"] in out and "Traceback" not in out and "pip" not in out.split(check["detail"])[0]
    assert not list(tmp_path.iterdir()) and not (ROOT / ".nox" / "stack-unsupported").exists()


def test_fix_messages_are_valid_in_powershell():
    for flavour in platforms.TORCH_SETS:
        fix = platforms.install_command(flavour)
        assert "&&" not in fix and "py -3" not in fix and fix.startswith("python -m pip install")
        assert all(step.startswith("python -m pip install") for step in platforms.install_steps(flavour))
    assert platforms.env_command("A", "C:/x", "invoke train", system="Windows") == '$env:A="C:/x"; invoke train'
    assert platforms.env_command("A", "/x", "invoke train", system="Linux") == "A=/x invoke train"


@pytest.mark.parametrize("port", [-1, 0, 70000])
def test_a_port_outside_the_tcp_range_is_a_failed_check_not_a_traceback(port):
    from finetune.env.doctor import FAIL, check_port

    check = check_port(port)
    assert check.status == FAIL and "1 to 65535" in check.detail and check.fix


def test_missing_metrics_packages_are_named_with_their_install(monkeypatch):
    """LLaMA-Factory's Evaluate & Predict (Save predictions) stops without its metrics extra."""
    have = {"llamafactory": "0.9.5", "nltk": "3.9"}
    monkeypatch.setattr(doctor, "_version", have.get)
    check = doctor.check_metrics()
    assert check.status == doctor.WARN and "jieba, rouge-chinese not installed" in check.detail
    assert check.fix == "python -m pip install jieba nltk rouge-chinese"
    have.update(jieba="0.42.1", **{"rouge-chinese": "1.0.3"})
    assert doctor.check_metrics().status == doctor.OK
    have.clear()  # no training stack: nothing to say
    assert doctor.check_metrics().status == doctor.OK
