"""Run every benchmark and print one combined table of the headline numbers and bars.

    python bench/run_all.py [--quick]

Each benchmark is its own script (run them alone for their full tables); this runs them one after another in
subprocesses, reads the `BENCH_JSON` line each prints, and summarises. --quick (smaller sizes, the forgetting
bench at --minutes 3) took 12 minutes on 2 CPU cores; the full run is about twice that. Needs ../shared (or
KOLM_SHARED). No GPU benchmark runs here (bench/mfu.py is the GPU one). The full run ends with
bench/real_model.py (SmolLM2-135M through every stage; left out of --quick).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table  # noqa: E402

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> tuple[dict | None, float, str]:
    t = time.time()
    p = subprocess.run([sys.executable, str(HERE / script), *args], capture_output=True, text=True)
    out = None
    for line in p.stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            out = json.loads(line[len("BENCH_JSON "):])
    return out, time.time() - t, (p.stdout + p.stderr)[-2000:] if p.returncode else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    q = args.quick
    rows = []

    def add(bench: str, metric: str, value: str, bar: str, ok: bool | None) -> None:
        rows.append({"bench": bench, "metric": metric, "value": value, "bar": bar,
                     "result": "-" if ok is None else ("PASS" if ok else "FAIL")})

    res, s, err = run("vocab.py", "--repeat", "3")  # the first run pays one-time imports: take a median
    if res:
        for b in res["bars"]:
            add("vocab", b["check"], b["value"], b["bar"], b["ok"] if b["bar"] != "-" else None)
    else:
        add("vocab", "error", err.splitlines()[-1] if err else "no result", "", False)
    res, s, err = run("data.py", "--size-mb", "20" if q else "50")
    if res:
        add("data", "kolm data build vs run_clm (MB/s, worst input)", f"{res['worst_bar_ratio']:.2f}x", ">= 2x",
            res["worst_bar_ratio"] >= 2)
    else:
        add("data", "error", err.splitlines()[-1] if err else "no result", "", False)
    res, s, err = run("train.py", "--steps", "15" if q else "25", "--hidden", "192")
    if res:
        add("train", "kolm train cpt tokens/s vs bare PyTorch loop", f"{res['ratio']:.3f}x", ">= 0.9x",
            res["ratio"] >= 0.9)
    else:
        add("train", "error", err.splitlines()[-1] if err else "no result", "", False)
    res, s, err = run("forgetting.py", "--minutes", "3" if q else "6")
    if res:
        n = len(res["seeds"])
        add("forgetting", f"replay: English bpb change (median of {n} seeds)", f"{res['en_rise']:+.1%}", "<= +2%",
            res["en_rise"] <= 0.02)
        add("forgetting", f"replay: Korean bpb change (median of {n} seeds)", f"{-res['ko_fall']:+.1%}", "<= -30%",
            res["ko_fall"] >= 0.3)
        add("forgetting", "no replay: English bpb change per seed",
            ", ".join(f"{x:+.1%}" for x in res["no_replay_en_rise_by_seed"]), "-", None)
    else:
        add("forgetting", "error", err.splitlines()[-1] if err else "no result", "", False)
    res, s, err = run("upscale.py", *(["--hidden", "512", "--layers", "8", "--drop", "2"] if q else []))
    if res:
        kolm_rows = [r for r in res["rows"] if str(r.get("method", "")).startswith("kolm")]
        worst = max((r.get("x_largest_shard", 0) for r in kolm_rows), default=float("nan"))
        add("upscale", "peak RSS / largest output shard", f"{worst:.2f}x", "~1x (stated)", worst <= 1.5)
    else:
        add("upscale", "error", err.splitlines()[-1] if err else "no result", "", False)
    res, s, err = run("memory_plan.py")
    if res:
        for r in res["rows"]:
            if r["strategy"] == "ZeRO-3":
                add("memory plan", f"{r['model']} ZeRO-3: min 80 GB GPUs", str(r["min GPUs (80GB)"]), "-", None)
    if not q:  # SmolLM2-135M through every stage: too slow for --quick (bench/real_model.py --quick is a smoke run)
        res, s, err = run("real_model.py")
        if res:
            points = res["points"]
            add("real model", "SmolLM2-135M end points: load, generate, Korean back",
                f"{sum(p['loads'] and p['generates'] and p['korean_back'] for p in points)}/{len(points)}",
                "all", res["passed"])
            ko = {p["stage"]: p["ko_bpb"] for p in points}
            if ko.get("base") and ko.get("resize") and ko.get("cpt"):
                add("real model", "Korean bpb base -> resize -> CPT",
                    f"{ko['base']:.3f} -> {ko['resize']:.3f} -> {ko['cpt']:.3f}", "-", None)
        else:
            add("real model", "error", err.splitlines()[-1] if err else "no result", "", False)
    print_table(rows, "kolm benchmarks (CPU; GPU benchmarks need a lent GPU and are not part of this run)")


if __name__ == "__main__":
    main()
