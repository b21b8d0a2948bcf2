"""Does bf16 autocast pay on this CPU, and does bits-per-byte hold? fp32 against bf16 autocast, same steps.

    python bench/precision.py [--steps 60] [--arms plain,kolm] [--threads 0]

SmolLM2-135M-Instruct through ``kolm train cpt`` as bench/extension_pays.py trains it (its Settings: 2 x 256 tokens
per step, 20% English replay, constant lr after warm-up), once with ``precision: fp32`` and once with
``precision: bf16`` (autocast: matmuls in bf16, weights, optimizer and loss in float32), the same seed and data
order, for each arm: **plain** (the base tokenizer, one full stage) and **kolm** (extend + resize, embeddings stage,
full stage). Reports the median seconds per step after the first 3, the speed-up, and held-out bits per byte (scored
in float32) after the same number of steps: bf16 "holds" when its bpb is within 1% of fp32's. ``precision: auto``
takes bf16 where :func:`kolm.precision.fast_bf16` says the hardware has it; this bench is the measurement behind
that rule. Needs ../shared (or KOLM_SHARED).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import extension_pays as xp  # noqa: E402  (the same data, recipe and scoring)
from common import print_json  # noqa: E402


def step_timer(times: list[float]) -> object:
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):  # noqa: ANN001, ANN201
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):  # noqa: ANN001, ANN201
            times.append(time.perf_counter() - self.t)

    return Timer()


def prepare(arm: str, base: Path, out: Path, text: dict[str, Path], s: xp.Settings) -> tuple[Path, Path, list]:
    """The arm's model and data folder, and its stages for ``steps`` steps in all (built once, both precisions)."""
    out.mkdir(parents=True, exist_ok=True)
    if arm == "plain":
        return base, xp.data_build(out, base, text, s, 0), []
    xp.kolm("vocab", "extend", "--base", base, "--corpus", text["ko_train"], "--num-new-tokens", s.new_tokens,
            "--min-frequency", 1, "--allow-fewer", "--output", out / "tok-ko", "--overwrite")
    xp.kolm("model", "resize", "--model", base, "--tokenizer", out / "tok-ko", "--output", out / "model-ko",
            "--init", s.init, "--overwrite")
    emb = [{"name": "embeddings", "kind": "embeddings", "max_steps": s.emb_steps, "lr": s.emb_lr}]
    return out / "model-ko", xp.data_build(out, out / "tok-ko", text, s, 0), emb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=60, help="training steps per run (kolm: embeddings stage included)")
    ap.add_argument("--arms", default="plain,kolm")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--docs", type=int, default=100, help="held-out documents per bpb set")
    ap.add_argument("--output", default=str(HERE / "out" / "precision"))
    args = ap.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not (xp.SHARED / "corpora" / "ko_dev.txt").is_file():
        sys.exit(f"needs {xp.SHARED}/corpora/ko_dev.txt and en_dev.txt (set KOLM_SHARED)")
    import torch

    from kolm.model.zoo import smollm2
    from kolm.precision import fast_bf16
    from kolm.tables import text_table

    if args.threads:
        torch.set_num_threads(args.threads)
    s = xp.Settings(eval_docs=args.docs)
    out, base = Path(args.output), smollm2()
    text = xp.split_corpora(out / "text")
    rows, results = [], []
    for arm in args.arms.split(","):
        model, data, emb = prepare(arm, base, out / arm, text, s)
        full = [{"name": "full", "kind": "full", "max_steps": args.steps - sum(x["max_steps"] for x in emb)}]
        runs = {}
        for precision in ("fp32", "bf16"):
            s.precision, times = precision, []
            torch.manual_seed(0)
            (out / arm / precision).mkdir(exist_ok=True)
            xp.train(out / arm / precision, model, data, emb + full, s, 0, step_timer(times))
            scores, _ = xp.score(out / arm / precision / "run" / "final", text, s, generate=False)
            runs[precision] = {"s_per_step": statistics.median(times[3:]), "scores": scores, "steps": len(times)}
            print(f"[precision] {arm} {precision}: {runs[precision]}", flush=True)
        f, b = runs["fp32"], runs["bf16"]
        row = [arm, f"{f['steps']}", f"{f['s_per_step']:.2f}", f"{b['s_per_step']:.2f}",
               f"{f['s_per_step'] / b['s_per_step']:.2f}x"]
        for key in ("ko_heldout", "ko_ood", "en_heldout"):
            row += [f"{f['scores'][key]:.4f}", f"{b['scores'][key]:.4f}", f"{b['scores'][key] / f['scores'][key]:.3f}"]
        rows.append(row)
        results.append({"arm": arm, **runs})
    print(f"\nSmolLM2-135M-Instruct, fp32 vs bf16 autocast, the same {args.steps} steps per run "
          f"({torch.get_num_threads()} threads; kolm.precision.fast_bf16('cpu') = {fast_bf16('cpu')}); "
          f"s/step: median after the first 3; bpb: held-out, scored in fp32; bf16/fp32 < 1.01: bpb holds")
    print(text_table(["arm", "steps", "fp32 s/step", "bf16 s/step", "speed-up", "fp32 ko", "bf16 ko", "bf16/fp32",
                      "fp32 ood", "bf16 ood", "bf16/fp32", "fp32 en", "bf16 en", "bf16/fp32"], rows))
    print_json("precision", {"steps": args.steps, "threads": torch.get_num_threads(), "runs": results})


if __name__ == "__main__":
    main()
