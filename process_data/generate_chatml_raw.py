"""Raw data (alpaca / sharegpt / OpenAI messages / CSV / TSV) -> ChatML JSONL in dataset/llamafactory/.

    python process_data/generate_chatml_raw.py dataset/raw/sample_alpaca.json [--fmt auto] [--name NAME]

Same as `invoke data.convert`; see finetune/data/convert.py for the rules.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.cli import guarded  # noqa: E402
from finetune.data.convert import FORMATS, convert_file  # noqa: E402
from finetune.layout import Layout  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="raw data file (.json array, .jsonl, .csv, .tsv)")
    ap.add_argument("--fmt", default="auto", choices=FORMATS, help="input format (default: auto-detect)")
    ap.add_argument("--name", default="", help="output name: <data dir>/<name>.jsonl (default: source name)")
    ap.add_argument("--question-col", default="question", help="CSV/TSV question column")
    ap.add_argument("--answer-col", default="answer", help="CSV/TSV answer column")
    ap.add_argument("--system-col", default="system", help="CSV/TSV optional system column")
    ap.add_argument("--data-dir", default="", help="dataset folder (default dataset/llamafactory)")
    ap.add_argument("--force", action="store_true",
                    help="replace an existing <name>.jsonl with different content (without it nothing is overwritten)")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)

    def run() -> None:
        from finetune.data.names import command

        layout = Layout.from_env(**({"data_dir": args.data_dir} if args.data_dir else {}))
        res = convert_file(args.src, layout, fmt=args.fmt, name=args.name or None, question_col=args.question_col,
                           answer_col=args.answer_col, system_col=args.system_col or None, force=args.force)
        if args.json:
            print(json.dumps(res.to_dict(), ensure_ascii=False))
            return
        state = "unchanged (same content)" if res.unchanged else "wrote"
        print(f"{res.fmt}: {state} {res.written} conversation(s) -> {res.out_path}")
        for path in res.replaced:
            print(f"  replaced {path} (--force)")
        if res.rejected:
            print(f"rejected {res.rejected} record(s) (line + reason): {res.rejects_path}")
        print(f"next: {command(['invoke', 'data.check', res.out_path])}")

    guarded(run, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
