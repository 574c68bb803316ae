#!/usr/bin/env bash
# The GPU checks in one run that fits in 8 minutes on one card (sized for an H200) and reaches nothing
# outside the machine: it uses only what is carried (this repository, plus a venv or a folder of wheels).
#
#   bash benchmarks/gpu_suite.sh                  # the current python must have torch (CUDA) + llamafactory
#   VENV=/path/to/venv bash benchmarks/gpu_suite.sh
#   WHEELS=/path/to/wheels bash benchmarks/gpu_suite.sh
#       a venv over the machine's own torch (--system-site-packages) gets llamafactory and the kit's light
#       dependencies from that folder, offline (see docs/field-notes.md#h200-throughput for the list)
#
# Stages, each with its own time limit (together at most 465 s): the card (nvidia-smi), the stack (verify_stack), the cuda
# session's tests (tests/gpu: bf16 LoRA, QLoRA 4-bit, the throughput preset) and
# benchmarks/gpu_throughput.py (LLaMA-Factory's defaults vs --preset throughput, same data: tokens/s and
# final loss). Writes $OUT/gpu_suite.json (OUT defaults to benchmarks/out/gpu-suite); exits non-zero
# when a stage failed. Without a GPU it says so and exits 0 with nothing measured.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
OUT="${OUT:-$ROOT/benchmarks/out/gpu-suite}"
mkdir -p "$OUT"
export DISABLE_VERSION_CHECK=1 HF_HUB_OFFLINE=1 GRADIO_ANALYTICS_ENABLED=False PIP_NO_INDEX=1 PYTHONUTF8=1
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
STATUS="$OUT/stages.tsv"
: >"$STATUS"

stage() {  # stage NAME SECONDS CMD...: run with a time limit, log to $OUT/NAME.log, record the outcome
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s)
  echo "== $name (limit ${limit} s)"
  timeout --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$STATUS"
  tail -n 5 "$OUT/$name.log"
  echo "   -> exit $rc in $(($(date +%s) - t0)) s"
}

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "no NVIDIA GPU here: nothing measured"
  printf '{"gpu": null, "measured": false, "reason": "no NVIDIA GPU (nvidia-smi)"}\n' >"$OUT/gpu_suite.json"
  exit 0
fi

PY="${PYTHON:-python3}"
if [ -n "${VENV:-}" ]; then
  PY="$VENV/bin/python"
elif [ -n "${WHEELS:-}" ]; then
  stage venv 60 bash -c "'$PY' -m venv --system-site-packages '$OUT/venv' && \
    '$OUT/venv/bin/python' -m pip install -q --no-index --find-links '$WHEELS' \
    llamafactory==0.9.5 invoke pyyaml orjson rich psutil httpx packaging filelock pytest pytest-timeout"
  PY="$OUT/venv/bin/python"
fi
echo "python: $PY"

stage card 15 nvidia-smi --query-gpu=name,memory.total,memory.free,driver_version --format=csv
stage stack 60 "$PY" -m finetune.env.verify_stack
stage cuda_tests 150 "$PY" -m pytest tests/gpu -m gpu -q -rs -p no:cacheprovider --junitxml="$OUT/cuda_tests.xml"
stage throughput 180 "$PY" benchmarks/gpu_throughput.py --steps 30 --conversations 800 --out "$OUT/throughput"

"$PY" - "$OUT" "$START" <<'EOF'
import json, subprocess, sys, time, xml.etree.ElementTree as ET
from pathlib import Path

out, start = Path(sys.argv[1]), int(sys.argv[2])
stages = {}
for line in (out / "stages.tsv").read_text(encoding="utf-8").splitlines():
    name, rc, secs = line.split("\t")
    stages[name] = {"exit": int(rc), "seconds": int(secs), "log": str(out / f"{name}.log")}
summary = {"measured": True, "stages": stages, "total_seconds": int(time.time()) - start}
try:
    summary["gpu"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                    capture_output=True, text=True, timeout=30).stdout.strip()
except (OSError, subprocess.SubprocessError):
    summary["gpu"] = None
junit = out / "cuda_tests.xml"
if junit.is_file():
    tests = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        kids = {c.tag: c.get("message", "") for c in case}
        state = "failed" if {"failure", "error"} & set(kids) else "skipped" if "skipped" in kids else "passed"
        tests.append({"test": case.get("name"), "state": state, "seconds": float(case.get("time", 0)),
                      "why": kids.get("skipped") or kids.get("failure") or kids.get("error") or ""})
    summary["cuda_tests"] = tests
result = out / "throughput" / "result.json"
if result.is_file():
    r = json.loads(result.read_text(encoding="utf-8"))
    summary["throughput"] = {k: {"tokens_per_s": round(r[k]["tokens_per_s"]), "final_loss": r[k]["final_loss"],
                                 "tokens": r[k]["tokens"], "train_s": round(r[k]["runtime_s"], 1)}
                             for k in ("defaults", "preset")}
    summary["throughput"]["ratio"] = round(r["ratio"], 2)
    summary["throughput"]["preset_args"] = r.get("preset_args")
(out / "gpu_suite.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
print(json.dumps(summary, indent=2))
bad = [n for n, s in stages.items() if s["exit"] != 0]
sys.exit(1 if bad else 0)
EOF
