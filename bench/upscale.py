"""Peak memory of ``kolm upscale`` (streamed, shard by shard) against the naive up-scaling in memory.

    python bench/upscale.py [--hidden 1024] [--layers 16] [--drop 4] [--shard 100MB]

Builds a Llama-shaped model from config (random init, bf16, a few hundred MB), saves it in shards and up-scales it
(SOLAR DUS, drop ``--drop`` layers per copy) in fresh subprocesses, each measuring its peak RSS minus its RSS
after imports. Peak RSS is ``VmHWM`` (file-backed mapped pages included, so lazily mapped safetensors count);
``ru_maxrss`` would be wrong here: across fork + exec it keeps the parent's high-water mark.

* ``kolm``: :func:`kolm.model.upscale.run` at two shard sizes (peak should follow the shard size, not the model);
* ``naive``: ``from_pretrained``, deep-copy the mapped layers into a new ``ModuleList``, ``save_pretrained``.

Both outputs are checked to hold the same tensors. Prints a table and a ``BENCH_JSON`` line; about a minute.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, print_json, print_table  # noqa: E402

PRELUDE = """
import json, sys, time
sys.path.insert(0, {repo!r})
def status_mb(key):
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith(key + ":")) / 1024
def rss_mb():
    return status_mb("VmRSS")
def peak_mb():
    return status_mb("VmHWM")
"""

KOLM = PRELUDE + """
import torch, safetensors.torch
from kolm.model.upscale import UpscaleConfig, run
base = rss_mb(); t = time.perf_counter()
run(UpscaleConfig(model={src!r}, output={out!r}, drop_layers={drop}, max_shard_size={shard!r}))
wall = time.perf_counter() - t
print("RESULT " + json.dumps({{"base": base, "peak": peak_mb(),
                              "wall": wall}}))
"""

NAIVE = PRELUDE + """
import copy, torch
from transformers import AutoModelForCausalLM
base = rss_mb(); t = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained({src!r}, dtype=torch.bfloat16)
n = model.config.num_hidden_layers
layers = [*range(n - {drop}), *range({drop}, n)]
new = torch.nn.ModuleList(copy.deepcopy(model.model.layers[i]) for i in layers)
for j, layer in enumerate(new):
    layer.self_attn.layer_idx = j
model.model.layers = new
model.config.num_hidden_layers = len(layers)
model.save_pretrained({out!r}, max_shard_size={shard!r})
wall = time.perf_counter() - t
print("RESULT " + json.dumps({{"base": base, "peak": peak_mb(),
                              "wall": wall}}))
"""


def measure(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"subprocess failed:\n{proc.stderr[-3000:]}")
    return json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))[7:])


def mb(path: Path) -> tuple[float, float]:
    """(total, largest) size of the safetensors files in ``path``, in MB."""
    sizes = [f.stat().st_size / 1e6 for f in path.glob("*.safetensors")]
    return sum(sizes), max(sizes)


def same_tensors(a: Path, b: Path) -> bool:
    import torch
    from safetensors import safe_open

    def where(p: Path) -> dict[str, Path]:
        return {k: f for f in p.glob("*.safetensors") for k in safe_open(str(f), framework="pt").keys()}

    wa, wb = where(a), where(b)
    if set(wa) != set(wb):
        return False
    for k in wa:
        x = safe_open(str(wa[k]), framework="pt").get_tensor(k)
        y = safe_open(str(wb[k]), framework="pt").get_tensor(k)
        if not torch.equal(x, y):
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--drop", type=int, default=4)
    ap.add_argument("--shard", default="100MB", help="output shard size of the first kolm run (the second: 2.5x)")
    args = ap.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from kolm.model.upscale import parse_size

    with tempfile.TemporaryDirectory(prefix="kolm-bench-upscale-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=int(args.hidden * 2.75),
                          num_hidden_layers=args.layers, num_attention_heads=args.hidden // 64,
                          num_key_value_heads=args.hidden // 64, tie_word_embeddings=False)
        torch.manual_seed(0)
        torch.set_default_dtype(torch.bfloat16)
        model = LlamaForCausalLM(cfg)
        torch.set_default_dtype(torch.float32)
        src = tmp / "src"
        model.save_pretrained(src, max_shard_size=args.shard)
        n_params = model.num_parameters()
        del model
        build_s = time.perf_counter() - t
        src_mb, src_shard = mb(src)

        shard2 = f"{int(parse_size(args.shard) * 2.5 / 1e6)}MB"
        runs = [("kolm", args.shard, KOLM), ("kolm", shard2, KOLM), ("naive", args.shard, NAIVE)]
        rows, outs = [], {}
        for name, shard, code in runs:
            out = tmp / f"{name}-{shard}"
            r = measure(code.format(repo=str(REPO), src=str(src), out=str(out), drop=args.drop, shard=shard))
            total, largest = mb(out)
            extra = r["peak"] - r["base"]
            rows.append({"method": name, "max_shard": shard, "source_MB": round(src_mb, 1),
                         "output_MB": round(total, 1), "largest_shard_MB": round(largest, 1),
                         "peak_minus_base_MB": round(extra, 1), "x_largest_shard": round(extra / largest, 2),
                         "x_source": round(extra / src_mb, 2), "wall_s": round(r["wall"], 2)})
            outs[(name, shard)] = out
        same = same_tensors(outs[("kolm", args.shard)], outs[("naive", args.shard)])

    title = (f"Depth up-scaling of a {n_params / 1e6:.0f}M-parameter bf16 Llama ({args.layers} -> "
             f"{2 * (args.layers - args.drop)} layers), source in {src_shard:.0f} MB shards; "
             f"peak RSS above the post-import baseline (model built and saved in {build_s:.1f} s)")
    print_table(rows, title)
    print(f"kolm and naive outputs hold identical tensors: {same}")
    print_json("upscale", {"rows": rows, "identical": same, "params": n_params})


if __name__ == "__main__":
    main()
