"""Time to ready: our launcher against raw `llamafactory-cli webui`, side by side in one run.

    python benchmarks/webui_ready.py [--rounds 3] [--method env|cli] [--json]

Each round starts both, alternating which goes first, and measures from spawning the command to the
first HTTP 200 on its URL (same poll loop for both, every 0.1 s). The launcher is run as a user runs
it (``python finetune/llama_factory/launcher.py --port P``), so its own start-up, the dependency
check, the pre-fill files and its readiness wait are all inside the number. Prints the medians and
the ratio launcher / raw (goal: at most 1.05).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finetune.env.portable import script_path  # noqa: E402
from finetune.proc import popen_group, stop_tree  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_ready(cmd: list[str], url: str, env: dict, cwd: Path, log: Path, timeout: float = 300) -> float:
    import httpx

    t0 = time.perf_counter()
    proc = popen_group(cmd, log_path=log, env=env, cwd=cwd)
    try:
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"{cmd} exited with {proc.returncode}; see {log}")
                try:
                    if client.get(url).status_code == 200:
                        return time.perf_counter() - t0
                except httpx.HTTPError:
                    pass
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"{cmd} not ready in {timeout} s; see {log}")
                time.sleep(0.1)
    finally:
        stop_tree(proc.pid, timeout=10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds (each starts both once)")
    ap.add_argument("--method", default="env", choices=["env", "cli"], help="launcher start method")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="webui-bench-"))
    base_env = {**os.environ, "DISABLE_VERSION_CHECK": "1", "HF_HUB_OFFLINE": "1",
                "GRADIO_ANALYTICS_ENABLED": "False", "BROWSER": "true" if os.name != "nt" else ""}
    loop = "127.0.0.1,localhost,::1"
    base_env["NO_PROXY"] = base_env["no_proxy"] = loop
    raw_cwd = work / "raw"
    raw_cwd.mkdir()
    cli = script_path("llamafactory-cli")  # the environment's scripts folder (sysconfig)
    raw_cmd = [str(cli)] if cli else [sys.executable, "-m", "llamafactory.cli"]
    times: dict[str, list[float]] = {"launcher": [], "raw": []}
    for i in range(args.rounds):
        order = ["raw", "launcher"] if i % 2 == 0 else ["launcher", "raw"]
        for which in order:
            port = free_port()
            url = f"http://127.0.0.1:{port}/"
            if which == "raw":
                env = {**base_env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
                cmd = [*raw_cmd, "webui"]
                cwd = raw_cwd
            else:
                env = {**base_env, "FINETUNE_ROOT": str(work / f"kit{i}")}
                cmd = [sys.executable, str(ROOT / "finetune" / "llama_factory" / "launcher.py"),
                       "--port", str(port), "--strict-port", "--method", args.method]
                cwd = ROOT
            secs = time_to_ready(cmd, url, env, cwd, work / f"{which}-{i}.log")
            times[which].append(secs)
            print(f"round {i + 1}: {which:8s} {secs:6.2f} s", file=sys.stderr, flush=True)

    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["launcher"] / med["raw"]
    best = {k: min(v) for k, v in times.items()}
    best_ratio = best["launcher"] / best["raw"]  # least disturbed by other load on the machine
    result = {"rounds": args.rounds, "method": args.method, "launcher_s": times["launcher"], "raw_s": times["raw"],
              "median_launcher_s": round(med["launcher"], 3), "median_raw_s": round(med["raw"], 3),
              "ratio": round(ratio, 3), "best_ratio": round(best_ratio, 3), "goal": 1.05, "ok": ratio <= 1.05}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"time to ready (median of {args.rounds}): launcher ({args.method}) {med['launcher']:.2f} s, "
              f"raw llamafactory-cli webui {med['raw']:.2f} s -> ratio {ratio:.3f}x (goal <= 1.05x); "
              f"best of each: {best['launcher']:.2f} s vs {best['raw']:.2f} s -> {best_ratio:.3f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
