"""data.check speed and memory on 100k conversations (about 95 MB) with 3,273 planted drops.

    python benchmarks/data_check.py [--n 100000] [--bad 3273] [--lf] [--keep DIR]

Prints, measured side by side in one run: an orjson parse-only loop over the file, data.check on
the same file (ratio; goal <= 2x), the errors found vs the planted drops, peak RSS of a child
process that only runs the check (goal < 200 MB) for the file and for a file twice as long (flat).
--lf also times LLaMA-Factory's own load + convert + tokenize pass (needs a tokenizer: the tiny
model is made on the spot) and checks it drops exactly the lines data.check marks as errors.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from finetune.data.check import check_file  # noqa: E402
from finetune.data.lf_oracle import write_planted_corpus  # noqa: E402

CHILD = """
import sys, time
def peak_kb():  # VmHWM: this process's own high-water mark (ru_maxrss survives exec on Linux)
    try:
        for line in open('/proc/self/status', encoding='utf-8'):
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
sys.path.insert(0, {root!r})
from finetune.data.check import check_file
base = peak_kb()
t = time.perf_counter(); r = check_file(__import__('pathlib').Path({path!r})); t = time.perf_counter() - t
print(peak_kb() / 1024, base / 1024, r.errors, t)
"""


def parse_only(path: Path) -> float:
    import orjson

    t = time.perf_counter()
    with path.open("rb") as fh:
        for raw in fh:
            orjson.loads(raw)
    return time.perf_counter() - t


def child_peak(path: Path) -> tuple[float, float, int, float]:
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), path=str(path))],
                         capture_output=True, text=True, check=True)
    peak, base, errors, secs = out.stdout.split()
    return float(peak), float(base), int(errors), float(secs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000, help="conversations (default 100000)")
    ap.add_argument("--bad", type=int, default=3273, help="planted drops (default 3273)")
    ap.add_argument("--words", type=int, default=18, help="words per user turn (sets the file size)")
    ap.add_argument("--repeat", type=int, default=3, help="timing repetitions (best is kept)")
    ap.add_argument("--lf", action="store_true", help="also time LLaMA-Factory's own pass (slow: about a minute)")
    ap.add_argument("--keep", default="", help="write the corpora here instead of a temp folder")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path, path2 = folder / "bench.jsonl", folder / "bench2x.jsonl"
        bad = write_planted_corpus(path, args.n, args.bad, seed=0, words=args.words)
        write_planted_corpus(path2, args.n * 2, args.bad * 2, seed=1, words=args.words)
        size = path.stat().st_size / 1e6
        # parse-only and check interleaved, so a busy machine slows both alike; the best of each and
        # the median of the per-round ratios are reported
        parses, runs = [], []
        for _ in range(args.repeat):
            parses.append(parse_only(path))
            t = time.perf_counter()
            report = check_file(path)
            runs.append(time.perf_counter() - t)
        t_parse, t_check = min(parses), min(runs)
        ratios = sorted(c / p for c, p in zip(runs, parses, strict=True))
        median_ratio = ratios[len(ratios) // 2]
        agree = report.error_lines == {b + 1 for b in bad}
        peak1, base1, _, _ = child_peak(path)
        peak2, base2, _, _ = child_peak(path2)
        result = {
            "conversations": args.n, "size_mb": round(size, 1), "planted_drops": len(bad),
            "errors_found": report.errors, "same_lines_as_planted": agree,
            "parse_only_s": round(t_parse, 3), "check_s": round(t_check, 3), "ratio": round(t_check / t_parse, 2),
            "ratio_median_of_rounds": round(median_ratio, 2),
            "peak_rss_mb": round(peak1, 1), "peak_rss_2x_file_mb": round(peak2, 1),
            "after_imports_mb": round(base1, 1),
        }
        if args.lf:
            from finetune.data.lf_oracle import lf_outcome
            from finetune.models.tiny import make_tiny_model

            tok = make_tiny_model(folder / "tiny")
            t = time.perf_counter()
            lf = lf_outcome(path, tok, workers=2, cutoff=4096)
            t_lf = time.perf_counter() - t
            result.update({"lf_s": round(t_lf, 1), "lf_ok": lf.ok, "lf_dropped": args.n - len(lf.kept),
                           "lf_agrees": lf.ok and {b + 1 for b in set(range(args.n)) - lf.kept} == report.error_lines,
                           "lf_over_check": round(t_lf / t_check, 1)})
    print(json.dumps(result, indent=2))
    print(f"data.check {result['check_s']} s vs orjson parse-only {result['parse_only_s']} s: "
          f"{result['ratio']}x best vs best, {result['ratio_median_of_rounds']}x median of rounds (goal <= 2x); peak {result['peak_rss_mb']} MB, "
          f"{result['peak_rss_2x_file_mb']} MB at 2x the file (goal < 200 MB, flat)")
    if args.lf:
        print(f"LLaMA-Factory's own pass: {result['lf_s']} s = {result['lf_over_check']}x data.check")
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
