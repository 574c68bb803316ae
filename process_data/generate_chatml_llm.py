"""ChatML conversations from plain documents (txt, md) by an LLM behind an OpenAI-compatible endpoint.

    python process_data/generate_chatml_llm.py docs/ --out dataset/llamafactory/synth.jsonl \
        --base-url http://127.0.0.1:8000/v1 --model NAME [--api-key KEY]

Endpoint, model and key also come from OPENAI_BASE_URL / OPENAI_MODEL / OPENAI_API_KEY.
Rerun the same command to resume: chunks already written are skipped. Invalid model output is
retried, then recorded in <out>.rejects.jsonl. See finetune/data/synth.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from finetune.cli import guarded  # noqa: E402
from finetune.data.synth import synthesize  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("docs", nargs="+", help=".txt / .md files or folders of them")
    ap.add_argument("--out", required=True, help="output ChatML .jsonl (appended to; resumable)")
    ap.add_argument("--base-url", default=None, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1")
    ap.add_argument("--model", default=None, help="model name sent to the endpoint")
    ap.add_argument("--api-key", default=None, help="API key (default $OPENAI_API_KEY)")
    ap.add_argument("--chunk-chars", type=int, default=2000, help="characters per chunk (default 2000)")
    ap.add_argument("--concurrency", type=int, default=4, help="requests at a time (default 4)")
    ap.add_argument("--retries", type=int, default=2, help="retries per chunk on invalid output (default 2)")
    ap.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubled each time")
    ap.add_argument("--timeout", type=float, default=120.0, help="HTTP timeout per request in seconds")
    ap.add_argument("--max-tokens", type=int, default=1024, help="max_tokens per answer")
    ap.add_argument("--temperature", type=float, default=0.7, help="sampling temperature")
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    args = ap.parse_args(argv)
    res = guarded(lambda: synthesize(args.docs, args.out, base_url=args.base_url, model=args.model,
                                     api_key=args.api_key, chunk_chars=args.chunk_chars,
                                     concurrency=args.concurrency, retries=args.retries, backoff=args.backoff,
                                     timeout=args.timeout, max_tokens=args.max_tokens,
                                     temperature=args.temperature), args.json)
    if args.json:
        print(json.dumps(res.to_dict(), ensure_ascii=False))
    else:
        print(f"{res.chunks} chunk(s): {res.skipped} done before, {res.written} conversation(s) written, "
              f"{res.rejected} chunk(s) rejected")
        print(f"output: {res.out_path}")
        if res.rejected:
            print(f"rejects (reason + raw output): {res.rejects_path}")
        print(f"next: invoke data.check {res.out_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
