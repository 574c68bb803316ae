"""The Windows code paths that Linux can exercise: console scripts in the environment's scripts folder,
gloo on Windows, paths that LLaMA-Factory's torchrun launch would split."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from finetune.env import portable
from finetune.errors import UserError


def _script(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{name}.exe" if os.name == "nt" else name)
    path.write_text("#!/bin/sh\necho ok\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_scripts_folder_comes_from_sysconfig_first():
    dirs = portable.scripts_dirs()
    assert dirs[0] == Path(sysconfig.get_path("scripts"))
    assert Path(sys.executable).parent in dirs


def test_script_found_in_a_scripts_folder_not_beside_python(tmp_path):
    # python.org / conda on Windows: python.exe in <prefix>, scripts in <prefix>\Scripts
    prefix = tmp_path / "Python311"
    _script(prefix, "python")
    wanted = _script(prefix / "Scripts", "torchrun")
    assert portable.script_path("torchrun", dirs=[prefix / "Scripts", prefix]) == wanted
    assert portable.script_path("no-such-tool-here", dirs=[prefix / "Scripts"]) is None


def test_this_environments_pip_is_found():
    found = portable.script_path("pip")
    assert found is not None and found.parent in portable.scripts_dirs()


def test_path_with_scripts_puts_the_environment_first():
    path = portable.path_with_scripts(os.pathsep.join(["/usr/bin", "/bin"]))
    assert path.split(os.pathsep)[0] == sysconfig.get_path("scripts") and path.endswith("/bin")
    # a child started by name with this PATH finds this environment's python
    exe = "python.exe" if os.name == "nt" else "python"
    out = subprocess.run([exe, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PATH": portable.path_with_scripts()})
    assert out.stdout.strip() == sys.prefix


def test_gloo_on_windows_even_with_cuda():
    assert portable.ddp_backend(cuda=True, system="Windows") == "gloo"
    assert portable.ddp_backend(cuda=False, system="Linux") == "gloo"
    assert portable.ddp_backend(cuda=True, system="Linux") is None  # NCCL, torch's default


def test_torchrun_launch_detection():
    assert portable.torchrun_launch({"FORCE_TORCHRUN": "1"}, gpu_count=0)
    assert not portable.torchrun_launch({}, gpu_count=1)
    assert portable.torchrun_launch({}, gpu_count=2)  # LLaMA-Factory starts torchrun itself
    assert not portable.torchrun_launch({"CUDA_VISIBLE_DEVICES": "0"})
    assert portable.torchrun_launch({"CUDA_VISIBLE_DEVICES": "0,1"})


def test_spaces_refused_up_front_with_the_fix(tmp_path):
    run = tmp_path / "First Last" / "outputs" / "run" / "training_args.yaml"
    with pytest.raises(UserError) as exc:
        portable.check_torchrun_paths({"FORCE_TORCHRUN": "1"}, [run], package_dir=tmp_path / "site", system="Windows")
    err = exc.value
    assert str(run) in err.message and '$env:FINETUNE_OUTPUTS_DIR="C:\\finetune\\outputs"; invoke train' in err.fix
    with pytest.raises(UserError) as exc:
        portable.check_torchrun_paths({"FORCE_TORCHRUN": "1"}, [tmp_path / "ok.yaml"],
                                      package_dir=tmp_path / "my venv" / "llamafactory", system="Linux")
    assert "venv in a folder without spaces" in exc.value.fix and "FINETUNE_OUTPUTS_DIR=/srv" in exc.value.fix


def test_spaces_are_fine_for_one_process(tmp_path):
    env = {"FORCE_TORCHRUN": "", "CUDA_VISIBLE_DEVICES": ""}
    portable.check_torchrun_paths(env, [tmp_path / "First Last" / "a.yaml"], package_dir=tmp_path)
    portable.check_torchrun_paths({"FORCE_TORCHRUN": "1"}, [tmp_path / "no_space.yaml"], package_dir=tmp_path)


def test_no_fix_in_the_package_needs_bash():
    """`&&` is not PowerShell 5.1 and `py -3` skips the active venv: no message of the kit uses them."""
    root = Path(portable.__file__).resolve().parents[1]
    bad = []
    for path in root.rglob("*.py"):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            code = line.split("#", 1)[0]
            if ("&&" in code or "py -3" in code) and "``&&``" not in code:
                bad.append(f"{path.relative_to(root.parent)}:{n}")
    assert not bad, bad
