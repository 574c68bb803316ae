"""Section 8 of the guide, for real: each test causes the failure (a port held by a real socket, a broken
JSONL line, a quantized base given to merge, a dataset outside the Data dir, a run written to a saves/
tree elsewhere, a Web UI on 0.0.0.0, a wrong template), checks that what the user sees is what the
guide quotes, then runs the guide's own fix block (the block marked ``<!-- guide-test: 8.N -->``) and
checks that the failure is gone.

Quotes are matched loosely only where the guide shows a placeholder: ``...`` stands for anything, a
number for any number, ``/path/to/x`` for any path."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from guide_runner import (
    GUIDE,
    TINY,
    Block,
    blocks,
    clean_env,
    ensure_basics,
    ensure_finished_run,
    run_block,
    run_commands,
    shared_tree,
)

pytestmark = [pytest.mark.smoke, pytest.mark.timeout(1800),
              pytest.mark.skipif(sys.platform == "win32", reason="the guide's blocks are bash, run in POSIX process sessions; on Windows the guide's PowerShell notes apply")]

TEXT = GUIDE.read_text(encoding="utf-8")


# ---- the guide's words ---------------------------------------------------------------------------
def section(n: str) -> str:
    start = TEXT.index(f"\n### {n} ")
    end = TEXT.find("\n### ", start + 1)
    return TEXT[start:end if end > 0 else None]


def quoted(n: str) -> list[str]:
    """The lines of the ```text blocks of section n (what the guide says the user sees)."""
    return [ln for blk in re.findall(r"```text\n(.*?)```", section(n), re.S) for ln in blk.splitlines() if ln.strip()]


def inline(n: str, needle: str) -> str:
    [hit] = [c for c in re.findall(r"`([^`\n]+)`", section(n)) if needle in c]
    return hit


def fix_blocks(n: str) -> list[Block]:
    found = [b for b in blocks(GUIDE) if b.guide_test == n]
    assert found, f"section {n} of the guide has no block marked <!-- guide-test: {n} -->"
    return found


def pattern(quote: str) -> re.Pattern:
    esc = re.escape(" ".join(quote.split()))
    esc = esc.replace(r"\.\.\.", ".*?")
    esc = re.sub(r"/path/to/[\w-]+", r"\\S+", esc)
    esc = re.sub(r"\d+", r"\\d+", esc)
    return re.compile(esc)


def assert_shows(quote: str, output: str) -> None:
    flat = " ".join(output.split())
    assert pattern(quote).search(flat), f"the guide quotes\n  {quote}\nbut the user sees\n{output[-3000:]}"


# ---- fixtures and helpers ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tree():
    pytest.importorskip("llamafactory")
    return shared_tree()


@pytest.fixture(scope="module")
def env(tree):
    e = clean_env(tree)
    ensure_basics(tree, e)
    return e


def sh(cmd: list[str], tree: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=timeout, stdin=subprocess.DEVNULL)


def invoke(args: str, tree: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    import shlex

    return sh([sys.executable, "-m", "invoke", *shlex.split(args)], tree, env, timeout)


def both(proc: subprocess.CompletedProcess) -> str:
    return (proc.stdout or "") + (proc.stderr or "")


def lan_address() -> str | None:
    """A non-loopback IPv4 address of this machine, if it has one."""
    import psutil

    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith("127."):
                return a.address
    return None


def reachable(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex((host, port)) == 0


# ---- 8.1 port taken ------------------------------------------------------------------------------
def test_8_1_port_taken(tree, env):
    holder = subprocess.Popen([sys.executable, "-c", "import socket,time; s=socket.socket(); "
                               "s.bind(('127.0.0.1',7860)); s.listen(); print('held', flush=True); time.sleep(900)"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ui = None
    try:
        if holder.stdout.readline().strip() != "held":
            pytest.fail("port 7860 is already taken on this machine by something else; the test needs it free")
        q = quoted("8.1")
        strict = invoke("webui --strict-port", tree, env)
        assert strict.returncode == 2, both(strict)
        assert_shows(next(x for x in q if x.startswith("error: --port")), both(strict))
        assert_shows(next(x for x in q if x.startswith("fix: stop that process")), both(strict))
        assert f"PID {holder.pid} " in both(strict)

        manual = run_commands("llamafactory-cli webui", tree, env)  # LLaMA-Factory's own launch moves on
        assert manual.ok, manual.output
        assert_shows(inline("8.1", "Running on local URL"), manual.output)
        assert "http://0.0.0.0:7860" not in manual.output

        doctor = invoke("doctor --fast --port 7860", tree, env)
        assert f"port 7860 is taken by PID {holder.pid}" in " ".join(both(doctor).split()), both(doctor)

        ui = subprocess.Popen([sys.executable, "-m", "invoke", "webui"], cwd=tree, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        seen = ""
        while "is ready" not in seen and ui.poll() is None:
            seen += ui.stdout.readline()
        assert "is ready" in seen, seen
        assert_shows(next(x for x in q if "using port" in x), seen)
    finally:
        holder.kill()
        holder.wait()
    # the other cause: the previous Web UI is still running
    again = invoke("webui", tree, env)
    assert again.returncode == 2, both(again)
    assert_shows(next(x for x in q if "already running" in x), both(again))
    assert_shows(next(x for x in q if x.startswith("fix: invoke webui --stop")), both(again))

    [fix] = fix_blocks("8.1")
    out = run_block(fix, tree, env)
    assert out.ok, out.output
    assert re.search(r"is ready: http://127\.0\.0\.1:\d+/", out.output), out.output  # --port 7870 started one
    ui.wait(timeout=60)  # the fix's `invoke webui --stop` ended the one left running
    assert invoke("webui --status", tree, env).returncode == 1


# ---- 8.2 out of memory ------------------------------------------------------------------------------
VM_PEAK = "import re, llamafactory.train.tuner; print(re.search(r'VmPeak:\\s+(\\d+)', open('/proc/self/status').read())[1])"
FEW_THREADS = {"OMP_NUM_THREADS": "2", "MALLOC_ARENA_MAX": "2"}  # the address space then does not grow with cores


def long_conversations(n: int, words: int = 1500) -> str:
    """Long chat logs (about 7,000 tokens each for the tiny tokenizer, cut to the cutoff)."""
    import random

    rng = random.Random(8)
    vocab = "the customer asked about an order a refund and the shipping time so the agent checked".split()
    return "".join(json.dumps({"messages": [{"role": "user", "content": " ".join(rng.choice(vocab) for _ in range(words))},
                                            {"role": "assistant", "content": "noted " * 40}]}) + "\n" for _ in range(n))


WEBUI_STYLE = r"""
import json, resource, subprocess, sys
from pathlib import Path
import yaml
from finetune.layout import Layout
from finetune.llama_factory import runs_tab
from finetune.llama_factory.board_patches import BoardContext, guarded_popen_for
from finetune.rundir import RunDir

layout, src, cap = Layout.from_env(), Path(sys.argv[1]), int(sys.argv[2])
run = layout.run_dir(layout.new_run("webui"))
run.mkdir(parents=True)
args = yaml.safe_load((src / "training_args.yaml").read_text(encoding="utf-8"))
args["output_dir"] = str(run)
(run / "training_args.yaml").write_text(yaml.safe_dump(args), encoding="utf-8")
limit = lambda: resource.setrlimit(resource.RLIMIT_AS, (cap * 1024, cap * 1024))
# LlamaBoard's own call (llamafactory/webui/runner.py), through the patch the launcher installs
popen = guarded_popen_for(BoardContext(layout, None))
env = {**__import__("os").environ, "LLAMABOARD_ENABLED": "1", "LLAMABOARD_WORKDIR": str(run)}  # as the runner sets
proc = popen(["llamafactory-cli", "train", str(run / "training_args.yaml")], env=env, stderr=subprocess.PIPE,
             text=True, preexec_fn=limit)
err = proc.communicate()[1]
[row] = [r for r in runs_tab.runs_table(layout) if r[0] == run.name]
print(json.dumps({"rc": proc.returncode, "stderr": err[-2000:], "status": RunDir(run).status(), "note": row[-1]}))
"""


def webui_style_run(tree: Path, env: dict[str, str], like: Path, cap_kb: int) -> dict:
    """Start a trainer the way the patched LlamaBoard does (its Popen call, stderr read by the UI, our
    guard in between) with ``like``'s arguments under the memory cap; what the UI and the Runs tab see."""
    proc = sh([sys.executable, "-c", WEBUI_STYLE, str(like), str(cap_kb)], tree, env)
    assert proc.returncode == 0, both(proc)
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="caps the trainer's memory with ulimit -v and reads "
                    "/proc/self/status (Linux); the GPU variant (CUDA out of memory) needs an NVIDIA GPU")
def test_8_2_out_of_memory(tree, env):
    """No GPU here, so the same failure in main memory: the trainer runs under an address-space cap of what
    importing the training stack takes plus 1 GiB (ulimit -v, a test line, not the guide's); ``chats`` gets
    64 long conversations, as real chat logs have. Batch 64 x cutoff 2048 needs about 2.3 GiB more and fails
    in its first step with the allocator's error; the guide's fix (batch 1, cutoff 1024) trains under the
    same cap. Measured here: +0.15 GiB for batch 1, +2.3 GiB for batch 64."""
    menv = {**env, **FEW_THREADS}
    base = sh([sys.executable, "-c", VM_PEAK], tree, menv)
    assert base.returncode == 0, both(base)
    cap = int(base.stdout.split()[-1]) + 2**20  # kB
    data = tree / "dataset" / "llamafactory" / "chats.jsonl"
    before = data.read_bytes()
    outputs = tree / "finetune" / "outputs" / "llamafactory"
    try:
        data.write_bytes(before + long_conversations(64).encode("utf-8"))
        q = [x for x in quoted("8.2") if "CUDA" not in x]
        runs_before = {p.name for p in outputs.iterdir()} if outputs.is_dir() else set()
        big = run_commands(f"ulimit -v {cap}\ninvoke train --model {TINY} --template qwen --dataset chats "
                           "--batch-size 64 --cutoff 2048", tree, menv, timeout=900)
        assert not big.ok, big.output
        for line in q:  # the allocator's line, invoke train's error and its fix
            assert_shows(line, big.output)
        [failed] = [p.name for p in outputs.iterdir() if p.name not in runs_before]
        listed = {r["id"]: r for r in json.loads(invoke("runs --json", tree, env).stdout)["runs"]}
        assert listed[failed]["status"] == "failed", listed[failed]
        note = sh([sys.executable, "-c", "import json; from finetune.layout import Layout; from finetune.llama_factory "
                   "import runs_tab; print(json.dumps(runs_tab.runs_table(Layout.from_env())))"], tree, env)
        [row] = [r for r in json.loads(note.stdout) if r[0] == failed]  # the Web UI's Runs tab says it too
        assert row[-1].startswith("out of memory: lower Batch size and/or Cutoff length"), row

        web = webui_style_run(tree, menv, outputs / failed, cap)  # the same failure started from the Web UI
        assert web["status"] == "failed" and web["note"].startswith("out of memory: lower Batch size"), web
        assert "can't allocate memory" in web["stderr"]  # what LlamaBoard shows in its output box

        [fix] = fix_blocks("8.2")
        out = run_block(Block(fix.file, fix.lineno, f"ulimit -v {cap}\n{fix.code}"), tree, menv, timeout=900)
        assert out.ok, out.output
        assert "suggested cutoff" in out.output and re.search(r"run \S+ finished", out.output), out.output
    finally:
        data.write_bytes(before)


# ---- 8.3 a broken JSONL line -----------------------------------------------------------------------
def test_8_3_broken_jsonl_line(tree, env):
    data = tree / "dataset" / "llamafactory" / "chats.jsonl"
    lines = data.read_text(encoding="utf-8").splitlines()
    lines[2] = lines[2].rstrip()[:-1]  # line 3 loses its closing brace, as after a hand edit
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    q = quoted("8.3")

    train = invoke(f"train --model {TINY} --template qwen --dataset chats --epochs 1", tree, env, timeout=600)
    assert train.returncode != 0, both(train)
    assert_shows(next(x for x in q if "DatasetGenerationError" in x), both(train))

    check_block, convert_block = fix_blocks("8.3")
    for line in check_block.code.splitlines():
        found = invoke(line.removeprefix("invoke "), tree, env)
        assert found.returncode == 1, both(found)  # errors -> exit code 1, as the guide says
        assert ":3" in both(found) or '"line": 3' in both(found), both(found)
    assert_shows(next(x for x in q if "invalid-json" in x), both(invoke("data.check dataset/llamafactory/chats.jsonl",
                                                                         tree, env)))
    assert_shows(next(x for x in q if x.strip().startswith("fix: repair")), both(
        invoke("data.check dataset/llamafactory/chats.jsonl", tree, env)))

    out = run_block(convert_block, tree, env)
    assert out.ok, out.output
    out = run_block(check_block, tree, env)  # now both lines exit 0
    assert out.ok, out.output
    train = invoke(f"train --model {TINY} --template qwen --dataset chats --epochs 1", tree, env, timeout=600)
    assert train.returncode == 0, both(train)


# ---- 8.4 merge into a quantized base ---------------------------------------------------------------
def test_8_4_merge_refuses_a_quantized_base(tree, env):
    """This stack (no CUDA, no bitsandbytes) cannot write real 4-bit weights, so the base is the tiny
    model with the quantization_config a bnb-4bit checkpoint carries in config.json: the refusal path."""
    run = ensure_finished_run(tree, env)
    import shutil

    quant = tree / "finetune" / "cache" / "models" / "tiny-qwen2-bnb-4bit"
    shutil.rmtree(quant, ignore_errors=True)
    shutil.copytree(tree / TINY, quant)
    cfg = json.loads((quant / "config.json").read_text(encoding="utf-8"))
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True, "bnb_4bit_quant_type": "nf4",
                                  "bnb_4bit_compute_dtype": "float16"}
    (quant / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")

    refused = invoke(f"merge {run} --base {quant}", tree, env)
    assert refused.returncode != 0, both(refused)
    for line in quoted("8.4"):
        assert_shows(line, both(refused))
    assert not (tree / "finetune" / "outputs" / "llamafactory" / run / "merged").exists()

    [fix] = fix_blocks("8.4")
    out = run_block(fix, tree, env)
    assert out.ok, out.output
    assert (tree / "finetune" / "outputs" / "llamafactory" / run / "merged" / "config.json").is_file()


# ---- 8.5 a dataset outside the Data dir ------------------------------------------------------------
LIST = ("import sys; from llamafactory.webui.control import list_datasets; "
        "print([c[0] if isinstance(c, tuple) else c for c in list_datasets(sys.argv[1]).choices])")


def dropdown(tree: Path, env: dict[str, str]) -> str:
    """The Train tab's Dataset choices, computed by LLaMA-Factory's own Web UI code for our Data dir."""
    proc = sh([sys.executable, "-c", LIST, str(tree / "dataset" / "llamafactory")], tree, env)
    assert proc.returncode == 0, both(proc)
    return proc.stdout


def test_8_5_dataset_outside_the_data_dir(tree, env):
    assert (tree / "raw" / "mine.jsonl").is_file()  # written outside the Data dir
    assert "'mine'" not in dropdown(tree, env)
    [fix] = fix_blocks("8.5")
    out = run_block(fix, tree, env)
    assert out.ok, out.output
    assert "'mine'" in dropdown(tree, env)
    assert (tree / "dataset" / "llamafactory" / "mine.jsonl").is_file()


# ---- 8.6 a run in a saves/ tree elsewhere ----------------------------------------------------------
def test_8_6_run_written_under_saves_elsewhere(tree, env):
    import yaml

    run = ensure_finished_run(tree, env)
    elsewhere = tree.parent / "started-here"
    name = "train_2025-01-01-00-00-00"
    args = yaml.safe_load((tree / "finetune" / "outputs" / "llamafactory" / run / "training_args.yaml")
                          .read_text(encoding="utf-8"))
    # what the Web UI does when Output dir is a name: saves/<model>/<method>/<name>, relative to its cwd
    args.update(output_dir=f"saves/Custom/lora/{name}", num_train_epochs=1.0, overwrite_output_dir=True)
    args.pop("resume_from_checkpoint", None)
    elsewhere.mkdir(exist_ok=True)
    (elsewhere / "args.yaml").write_text(yaml.safe_dump(args), encoding="utf-8")
    trained = subprocess.run([str(Path(sys.executable).parent / "llamafactory-cli"), "train", "args.yaml"],
                             cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
    assert (elsewhere / "saves" / "Custom" / "lora" / name / "adapter_config.json").is_file()

    listed = invoke("runs --json", tree, env)
    assert listed.returncode == 0 and name not in listed.stdout  # the symptom: invoke runs does not see it
    [fix] = fix_blocks("8.6")
    fix = Block(fix.file, fix.lineno, fix.code.replace("/path/where/you/started", str(elsewhere)))
    out = run_block(fix, tree, env)
    assert out.ok, out.output
    assert name in out.output


# ---- 8.7 a Web UI on 0.0.0.0 -------------------------------------------------------------------------
def test_8_7_webui_exposed_on_all_addresses(tree, env):
    ip = lan_address()
    probe = f"{sys.executable} -c \"import socket,sys; s=socket.socket(); s.settimeout(2); " \
            f"sys.exit(0 if s.connect_ex(('{ip}', int(sys.argv[1]))) == 0 else 1)\""
    port_of = "grep -oE 'http://[0-9.]+:[0-9]+' \"$__root\"/.guide-server-1.log | tail -n 1 | grep -oE '[0-9]+$'"
    checks = f"port=$({port_of}); echo \"port $port\"; " + (
        f"if {probe} \"$port\"; then echo 'EXPOSED on {ip}'; else echo 'not reachable on {ip}'; fi" if ip else "true")
    exposed = run_commands("llamafactory-cli webui", tree, env, extra=checks)
    assert exposed.ok, exposed.output
    assert_shows(inline("8.7", "Running on local URL"), exposed.output)
    if ip:
        assert f"EXPOSED on {ip}" in exposed.output, exposed.output

    [fix] = fix_blocks("8.7")
    out = run_block(fix, tree, env, extra=checks)
    assert out.ok, out.output
    assert "is ready: http://127.0.0.1:" in out.output
    if ip:
        assert f"not reachable on {ip}" in out.output, out.output


# ---- 8.8 a wrong template ------------------------------------------------------------------------------
def test_8_8_wrong_template(tree, env):
    """A run that learned something (the demo's facts): asked with another template it does not answer
    what it learned; the guide's fix (infer without --template: the run's own) gets the trained answer."""
    outputs = tree / "finetune" / "outputs" / "llamafactory"
    demo = sorted(p.parent.name for p in outputs.glob("*-demo/train_results.json"))
    if not demo:
        made = run_commands("invoke demo --no-webui", tree, env, timeout=900)
        assert made.ok, made.output
        demo = sorted(p.parent.name for p in outputs.glob("*-demo/train_results.json"))
    run = demo[-1]
    first = json.loads((tree / "dataset" / "llamafactory" / "demo_facts.jsonl").read_text(encoding="utf-8")
                       .splitlines()[0])["messages"]
    question = next(m["content"] for m in first if m["role"] == "user")
    answer = next(m["content"] for m in first if m["role"] == "assistant")

    wrong = sh([sys.executable, "-m", "invoke", "infer", run, "--prompt", question, "--template", "default",
                "--max-new-tokens", "48"], tree, env)
    assert wrong.returncode == 0, both(wrong)
    assert answer not in wrong.stdout, wrong.stdout  # the symptom: not what it was trained to say

    fixed = sh([sys.executable, "-m", "invoke", "infer", run, "--prompt", question, "--max-new-tokens", "48"], tree, env)
    assert fixed.returncode == 0, both(fixed)
    assert answer in fixed.stdout, fixed.stdout
    assert "invoke infer RUN_ID --prompt" in section("8.8")  # the fix the guide gives is this command


# ---- 8.10 the short cases -----------------------------------------------------------------------------
def test_8_10_interrupted_run_resumes(tree, env):
    """Ctrl-C during training (SIGINT to the foreground process group, as a terminal sends it): the run is
    ``interrupted``; the guide's ``invoke train --resume RUN_ID`` finishes it from its checkpoint."""
    import signal
    import time

    outputs = tree / "finetune" / "outputs" / "llamafactory"
    before = {p.name for p in outputs.iterdir()} if outputs.is_dir() else set()
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "train", "--model", TINY, "--template", "qwen",
                             "--dataset", "chats", "--epochs", "30", "--batch-size", "1", "--save-steps", "2",
                             "--run-name", "ctrl-c"], cwd=tree, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not list(outputs.glob("*-ctrl-c/checkpoint-*/trainer_state.json")):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.poll() else "slow"
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    [run] = [p.name for p in outputs.iterdir() if p.name not in before]
    assert proc.returncode == 130 and f"invoke train --resume {run}" in out, out
    listed = {r["id"]: r for r in json.loads(invoke("runs --json", tree, env).stdout)["runs"]}
    assert listed[run]["status"] == "interrupted", listed[run]

    hint = inline("8.10", "--resume")
    assert "`invoke runs` 显示 `interrupted`" in section("8.10") and hint == "invoke train --resume RUN_ID"
    resumed = invoke(hint.removeprefix("invoke ").replace("RUN_ID", run), tree, env, timeout=900)
    assert resumed.returncode == 0 and f"run {run} finished" in resumed.stdout, both(resumed)


def test_8_10_base_model_moved(tree, env):
    """A run trained on another machine (here: its base folder moved away): infer says what is missing and
    names --base; the guide's ``invoke infer RUN_ID --base /new/path/to/base`` answers."""
    import shutil

    old, new = tree.parent / "base-on-the-other-machine", tree.parent / "base-here"
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(new, ignore_errors=True)
    shutil.copytree(tree / TINY, old)
    trained = invoke(f"train --model {old} --template qwen --dataset chats --epochs 1 --run-name moved --json",
                     tree, env, timeout=900)
    assert trained.returncode == 0, both(trained)
    run = json.loads(trained.stdout)["run_id"]
    old.rename(new)

    lost = invoke(f"infer {run} --prompt hi --max-new-tokens 4", tree, env)
    assert lost.returncode != 0 and str(old) in both(lost) and "--base" in both(lost), both(lost)
    assert "Traceback" not in both(lost)
    hint = inline("8.10", "--base")
    cmd = hint.replace("RUN_ID", run).replace("/new/path/to/base", str(new)).removeprefix("invoke ")
    found = invoke(cmd + " --max-new-tokens 4", tree, env)
    assert found.returncode == 0, both(found)


def test_8_10_slow_webui_start(tree, env):
    """A first start slower than the wait (here: a 1 s wait): the launcher stops what it started and
    names the log and the guide's ``invoke webui --timeout 600``, which then starts it."""
    slow = invoke("webui --timeout 1", tree, env)
    assert slow.returncode != 0, both(slow)
    hint = inline("8.10", "--timeout")
    assert hint in both(slow) and "webui.log" in both(slow), both(slow)
    assert invoke("webui --status", tree, env).returncode == 1  # nothing left running
    started = run_commands(hint, tree, env)
    assert started.ok and "is ready: http://127.0.0.1:" in started.output, started.output


def test_8_10_fewer_samples_than_lines(tree, env):
    """A conversation LLaMA-Factory drops (it ends on a user turn): the guide's ``invoke data.check FILE``
    names its line and says that LLaMA-Factory drops it."""
    good = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    bad = {"messages": [*good["messages"], {"role": "user", "content": "and?"}]}
    f = tree / "dataset" / "llamafactory" / "short.jsonl"
    f.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n", encoding="utf-8")
    hint = inline("8.10", "data.check")
    checked = invoke(hint.removeprefix("invoke ").replace("FILE", str(f)), tree, env)
    assert checked.returncode == 1, both(checked)
    assert f"{f}:2: error ends-on-user" in " ".join(both(checked).split()), both(checked)
    assert "LLaMA-Factory drops it" in both(checked) and "drops 1" in both(checked)


def test_every_guide_test_mark_has_a_test():
    names = {f"8.{n}" for n in re.findall(r"def test_8_(\d+)_", Path(__file__).read_text(encoding="utf-8"))}
    marked = {b.guide_test for b in blocks(GUIDE) if b.guide_test}
    assert marked <= names, f"blocks marked for tests that do not exist: {sorted(marked - names)}"


# ---- 8.9 a torch / torchvision / torchaudio mismatch ----------------------------------------------------
MISMATCHED_TORCH = "torch==2.13.0+cpu"  # a CPU build of another torch: the index's torchvision no longer loads


def mismatched_venv(base: Path) -> Path:
    """A venv that sees this stack (a .pth line) but has its own CPU ``torch`` of another version in
    front of it: the stack's torchvision / torchaudio (CUDA builds for torch 2.14.1) now load beside a
    CPU torch 2.13.0, the install the guide describes. Only torch itself is installed (no 7 GB copy)."""
    import sysconfig

    venv = base / "mismatched-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    stack = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "finetune-stack.pth").write_text("\n".join(sorted(stack)) + "\n", encoding="utf-8")
    # pip comes from the stack (the .pth line); it installs into this venv
    got = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed",
                          MISMATCHED_TORCH, "invoke"],
                         capture_output=True, text=True, timeout=900)
    if got.returncode != 0:
        pytest.skip(f"pip cannot get {MISMATCHED_TORCH} here (a CPU build of another torch makes the mismatch): "
                    + got.stderr.strip()[-300:])
    return venv


@pytest.mark.skipif(not (sys.platform.startswith("linux") and __import__("platform").machine() == "x86_64"),
                    reason="the mismatch reproduced is Linux x86_64's: a CPU torch beside the default index's CUDA "
                           "torchvision / torchaudio (the only set whose builds differ that way)")
def test_8_9_torch_set_mismatch(tree, env):
    venv = mismatched_venv(tree.parent)
    menv = {**env, "VIRTUAL_ENV": str(venv), "PATH": os.pathsep.join([str(venv / "bin"), env["PATH"]])}
    python = str(venv / "bin" / "python")
    q = quoted("8.9")

    ui = sh([python, "-m", "invoke", "webui", "--strict-port", "--port", "7890"], tree, menv, timeout=600)
    assert ui.returncode != 0, both(ui)
    assert_shows(next(x for x in q if x.startswith("error:")), both(ui))
    log = (tree / "finetune" / "state" / "llamaboard" / "webui.log").read_text(encoding="utf-8", errors="replace")
    assert [x for x in q if not x.startswith("error:") and x in log], log[-3000:]  # the log lines the guide names

    doctor = sh([python, "-m", "invoke", "doctor", "--json"], tree, menv)
    assert doctor.returncode != 0, both(doctor)
    [row] = [c for c in json.loads(doctor.stdout) if c["name"] == "torch set"]
    assert row["status"] == "fail", row
    assert "torchvision was built for another torch than 2.13.0+cpu (operator torchvision::nms does not exist)" \
        in row["detail"], row
    assert "torchaudio is a CUDA build but torch 2.13.0+cpu is CPU-only (it looks for libc10_cuda.so)" in row["detail"]
    [block] = fix_blocks("8.9")
    pip_lines = [" ".join(x.split()) for x in block.code.splitlines() if " pip " in x]
    assert len(pip_lines) == 2 and all(x in row["fix"] for x in pip_lines), (pip_lines, row)  # the guide = doctor

    out = run_block(block, tree, menv)
    assert out.ok, out.output
    assert re.search(r"torch set\s+.\s*ok", out.output), out.output
    probe = sh([python, "-c", "import torch, torchvision, torchaudio; print(torch.__version__)"], tree, menv)
    assert probe.returncode == 0 and probe.stdout.strip().startswith("2.14.1"), both(probe)
    started = run_commands("invoke webui --strict-port --port 7890", tree, menv)  # the same command now starts
    assert started.ok and "is ready: http://127.0.0.1:7890/" in started.output, started.output
