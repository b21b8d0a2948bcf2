"""Benchmark ``kolm data build`` against the HF ``run_clm.py`` preprocessing, in the same run.

    python bench/data.py                 # ../shared corpora repeated to >= 50 MB, Llama-2 tokenizer
    python bench/data.py --size-mb 10    # quicker
    python bench/data.py --rows recipe_distinct,nodedup --size-mb 20 --scale 10   # peak memory at 1x and 10x

Rows (each in a fresh Python process; wall time and peak RSS of the process and its workers):

- ``run_clm``: what transformers' ``examples/pytorch/language-modeling/run_clm.py`` does: ``load_dataset("text")``,
  ``map(tokenize, batched=True)`` with the fast tokenizer, ``map(group_texts, batched=True)`` into blocks of
  ``seq_len``; with the example's default (one process) and with ``--num-proc`` workers.
- ``kolm recipe``: ``kolm data build`` with everything on (NFC/whitespace, PII, quality filters, exact and
  MinHash dedup, 80/20 token mix, packing, validation split). On verbatim repeats exact dedup drops every
  later copy before it is cleaned or tokenized, which is what dedup is for, but it makes this row easy.
- ``kolm recipe, distinct copies``: the same on a corpus whose copies differ in one word per line, so exact dedup
  cannot shortcut: every document is cleaned, PII-scanned and MinHashed; near-dedup then drops most copies,
  which are never tokenized. ``run_clm`` is run on this corpus too.
- ``kolm no dedup (info)``: cleaning, PII, filters, tokenization and packing of every copy (dedup off): the same
  amount of tokenization as ``run_clm``. Not the bar's configuration (the bar's includes dedup); it shows
  what is left when no document can be skipped: tokenization, which both pipelines share, dominates.

Throughput is input MB (of the .txt files) per second of wall time; tokens/s counts the tokens each row produced
(run_clm: grouped tokens; kolm: tokens of kept documents, before the mix samples them). The bar: the kolm
recipe rows (cleaning and dedup included) >= 2x the faster run_clm on the same input. Prints a table and a
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED, print_json  # noqa: E402


def make_corpus(folder: Path, size_mb: float, distinct: bool) -> list[Path]:
    """ko_dev and en_dev repeated until the two files together reach ``size_mb``."""
    ko = (SHARED / "corpora" / "ko_dev.txt").read_text(encoding="utf-8").splitlines()
    en = (SHARED / "corpora" / "en_dev.txt").read_text(encoding="utf-8").splitlines()
    one = sum(len(x.encode()) + 1 for x in ko + en)
    copies = max(1, -(-int(size_mb * 1e6) // one))
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for name, lines in (("ko", ko), ("en", en)):
        p = folder / f"{name}.txt"
        with open(p, "w", encoding="utf-8") as f:
            for k in range(copies):
                if distinct and k:
                    tag = f" ({k})" if name == "en" else f" ({k}번)"
                    f.write("\n".join(x + tag if x else x for x in lines) + "\n")
                else:
                    f.write("\n".join(lines) + "\n")
        out.append(p)
    return out


def row_run_clm(files: list[str], tokenizer: str, seq_len: int, num_proc: int | None, work: str) -> dict:
    from itertools import chain

    import datasets
    from datasets import load_dataset
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(tokenizer)
    raw = load_dataset("text", data_files={"train": files}, cache_dir=work, keep_linebreaks=True)

    def tokenize_function(examples):
        return tok(examples["text"])

    tokenized = raw.map(tokenize_function, batched=True, num_proc=num_proc, remove_columns=["text"])

    def group_texts(examples):
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total = len(concatenated[list(examples.keys())[0]])
        total = (total // seq_len) * seq_len
        result = {k: [t[i:i + seq_len] for i in range(0, total, seq_len)] for k, t in concatenated.items()}
        result["labels"] = result["input_ids"].copy()
        return result

    lm = tokenized.map(group_texts, batched=True, num_proc=num_proc)
    n = len(lm["train"])
    return {"seconds": time.perf_counter() - t0, "tokens": n * seq_len}


def row_kolm(files: list[str], tokenizer: str, seq_len: int, num_proc: int, work: str, dedup: bool) -> dict:
    sys.path.insert(0, str(REPO))
    from kolm.config import from_dict
    from kolm.data.build import run
    from kolm.data.config import DataBuildConfig

    cfg = from_dict(DataBuildConfig, {
        "tokenizer": tokenizer, "seq_len": seq_len, "mix": {"ko": 0.8, "en": 0.2}, "num_proc": num_proc,
        "sources": [{"name": "ko", "lang": "ko", "paths": [files[0]]}, {"name": "en", "lang": "en",
                                                                        "paths": [files[1]]}],
        "dedup": {"exact": dedup, "near": dedup}, "output": str(Path(work) / "out"), "progress": False,
        "validation": {"fraction": 0.01, "max_docs": 1000}})
    t0 = time.perf_counter()
    m = run(cfg)
    dt = time.perf_counter() - t0
    src = m["sources"].values()
    return {"seconds": dt, "tokens": sum(s["tokens_kept"] for s in src), "kept": sum(s["kept"] for s in src),
            "read": sum(s["read"] for s in src), "train_tokens": m["train"]["tokens"],
            "shares": {k: v["achieved_share"] for k, v in m["languages"].items()}}


def child(args: argparse.Namespace) -> None:
    spec = json.loads(args.child)
    work = tempfile.mkdtemp(prefix="kolm-bench-", dir=spec.get("tmp"))
    try:
        if spec["kind"] == "run_clm":
            res = row_run_clm(spec["files"], spec["tokenizer"], spec["seq_len"], spec["num_proc"], work)
        else:
            res = row_kolm(spec["files"], spec["tokenizer"], spec["seq_len"], spec["num_proc"], work, spec["dedup"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    res["rss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    res["rss_children_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("RESULT " + json.dumps(res))


def run_row(spec: dict) -> dict:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    p = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                       env=env, check=False)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"row {spec['name']} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=50.0)
    ap.add_argument("--tokenizer", default="llama2", help="name under ../shared/tokenizers or a folder")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--num-proc", type=int, default=2)
    ap.add_argument("--scale", type=int, default=0, help="also run the kolm rows on this many times the input")
    ap.add_argument("--rows", default="all", help="comma-separated subset of: clm1, clm, recipe, nodedup, "
                                                  "clm1_distinct, clm_distinct, recipe_distinct")
    ap.add_argument("--tmp", default=None, help="folder for corpora and outputs (default: system temp)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if not (SHARED / "corpora" / "ko_dev.txt").is_file():
        sys.exit(f"shared corpora not found at {SHARED} (set KOLM_SHARED)")
    tok = str(SHARED / "tokenizers" / args.tokenizer) if "/" not in args.tokenizer else args.tokenizer
    root = Path(tempfile.mkdtemp(prefix="kolm-bench-data-", dir=args.tmp))
    try:
        base = {"tokenizer": tok, "seq_len": args.seq_len, "tmp": str(root)}
        n = args.num_proc
        all_rows = {
            "clm1": {"name": "run_clm (1 process, example default)", "kind": "run_clm", "corpus": "repeated",
                     "num_proc": None},
            "clm": {"name": f"run_clm (num_proc={n})", "kind": "run_clm", "corpus": "repeated", "num_proc": n},
            "recipe": {"name": "kolm recipe", "kind": "kolm", "corpus": "repeated", "num_proc": n, "dedup": True,
                       "bar": True},
            "nodedup": {"name": "kolm no dedup (info)", "kind": "kolm", "corpus": "repeated", "num_proc": n,
                        "dedup": False},
            "clm1_distinct": {"name": "run_clm distinct (1 process)", "kind": "run_clm", "corpus": "distinct",
                              "num_proc": None},
            "clm_distinct": {"name": f"run_clm distinct (num_proc={n})", "kind": "run_clm", "corpus": "distinct",
                             "num_proc": n},
            "recipe_distinct": {"name": "kolm recipe, distinct copies", "kind": "kolm", "corpus": "distinct",
                                "num_proc": n, "dedup": True, "bar": True},
        }
        keys = list(all_rows) if args.rows == "all" else args.rows.split(",")
        rows = []
        for k in keys:
            rows.append({**all_rows[k], "size": args.size_mb})
            if args.scale > 1 and all_rows[k]["kind"] == "kolm":
                rows.append({**all_rows[k], "name": all_rows[k]["name"] + f" x{args.scale}",
                             "size": args.size_mb * args.scale, "bar": False})
        corpora: dict[tuple[str, float], list[str]] = {}
        results = []
        for r in rows:
            ck = (r["corpus"], r["size"])
            if ck not in corpora:
                corpora[ck] = [str(p) for p in make_corpus(root / f"{ck[0]}-{ck[1]:g}", ck[1],
                                                           distinct=ck[0] == "distinct")]
            spec = {**base, **r, "files": corpora[ck]}
            mb = sum(os.path.getsize(f) for f in spec["files"]) / 1e6
            res = run_row(spec)
            res.update(name=r["name"], input_mb=mb, mb_s=mb / res["seconds"], tok_s=res["tokens"] / res["seconds"],
                       corpus=r["corpus"], size=r["size"], bar=r.get("bar", False))
            results.append(res)
            print(f"  done: {r['name']}: {res['seconds']:.1f} s", file=sys.stderr)
        best = {}
        for x in results:
            if x["name"].startswith("run_clm"):
                key = (x["corpus"], x["size"])
                best[key] = max(best.get(key, 0.0), x["mb_s"])
        print(f"\ninput: ../shared corpora repeated to ~{args.size_mb:g} MB; tokenizer {args.tokenizer}; "
              f"seq_len {args.seq_len}; {os.cpu_count()} CPU(s); load average {os.getloadavg()[0]:.1f}\n")
        head = (f"{'row':40} {'input MB':>8} {'s':>7} {'MB/s':>6} {'tok/s':>9} {'x best run_clm':>14} "
                f"{'peak RSS MB':>12}")
        print(head)
        print("-" * len(head))
        for x in results:
            b = best.get((x["corpus"], x["size"]))
            ratio = f"{x['mb_s'] / b:14.2f}" if b else f"{'-':>14}"
            rss = x["rss_self_mb"] + x["rss_children_mb"]
            print(f"{x['name']:40} {x['input_mb']:8.1f} {x['seconds']:7.1f} {x['mb_s']:6.2f} {x['tok_s']:9.0f} "
                  f"{ratio} {rss:12.0f}")
        bar_rows = [x for x in results if x["bar"] and (x["corpus"], x["size"]) in best]
        worst = min((x["mb_s"] / best[(x["corpus"], x["size"])] for x in bar_rows), default=float("nan"))
        if bar_rows:
            print(f"\nbar: kolm recipe (cleaning, PII and dedup included) >= 2.00x the faster run_clm on the same "
                  f"input: worst {worst:.2f}x -> {'PASS' if worst >= 2 else 'FAIL'}")
        print("peak RSS = main process + largest worker. tok/s: run_clm = grouped tokens, kolm = tokens of kept "
              "documents (duplicates are dropped before tokenizing)")
        print_json("data", {"size_mb": args.size_mb, "tokenizer": args.tokenizer,
                            "worst_bar_ratio": round(worst, 3), "rows": results})
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
