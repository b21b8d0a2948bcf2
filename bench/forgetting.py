"""Forgetting at small scale on CPU: Korean CPT of an English-pretrained tiny Llama, with 0% and 20% replay.

    python bench/forgetting.py [--minutes 6] [--hidden-size 128] [--layers 4] [--output DIR]

Runs the `kolm demo` pipeline (English pretraining, `kolm vocab extend`, `kolm model resize`, `kolm data build`
Korean-only and Korean + 20% English, `kolm train cpt` embeddings then full, `kolm eval` on held-out text) and
reports Korean and English bits-per-byte before and after. Bar (issue 4): with replay the English bpb rises by at
most 2% while the Korean bpb falls by at least 30%; the no-replay row is reported beside it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_json, print_table  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--output", default=None)
    args = ap.parse_args()

    from kolm.demo.run import DemoConfig, run

    out = args.output or tempfile.mkdtemp(prefix="kolm-bench-forgetting-")
    res = run(DemoConfig(output=out, minutes=args.minutes, hidden_size=args.hidden_size, layers=args.layers))
    t = res["table"]
    base = t["base (English)"]
    rows = [{"model": name, "ko bpb": v["ko"], "en bpb": v["en"], "ko change": f"{(v['ko'] / base['ko'] - 1):+.1%}",
             "en change": f"{(v['en'] / base['en'] - 1):+.1%}"} for name, v in t.items()]
    print_table(rows, f"Tiny Llama {args.layers}x{args.hidden_size}, --minutes {args.minutes}, held-out text")
    rep = t["CPT ko + 20% en replay"]
    en_rise, ko_fall = rep["en"] / base["en"] - 1, 1 - rep["ko"] / base["ko"]
    ok = en_rise <= 0.02 and ko_fall >= 0.30
    print(f"\nbar (replay): English rise {en_rise:+.1%} (<= +2%), Korean fall {ko_fall:.1%} (>= 30%) -> "
          f"{'PASS' if ok else 'FAIL'}")
    print_json("forgetting", {"rows": rows, "en_rise": en_rise, "ko_fall": ko_fall, "pass": ok})


if __name__ == "__main__":
    main()
