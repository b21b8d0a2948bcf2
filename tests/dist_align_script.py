"""SFT and DPO under DeepSpeed ZeRO-3 on several CPU ranks, launched by tests/test_align.py::test_zero3_sft_and_dpo:

    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 --master_port PORT tests/dist_align_script.py JOB.json

JOB.json: {"model", "sft_data", "dpo_data", "out", "deepspeed", "eval_sets"}. On every rank, runs
``kolm.align.sft.run`` with the ``zero3`` preset (train/deepspeed/zero3.json) and ``kolm.align.dpo.run`` with the
DeepSpeed JSON file ``deepspeed``, a few steps each. After the first step each rank records how the frozen base
weights are held (``out/{sft,dpo}_rank{r}.json``); the adapters land in ``out/sft`` and ``out/dpo``. The online
evaluation on ``eval_sets`` (every 2 steps) runs its forward passes on every rank.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def partitioned(model) -> dict:
    """How the frozen base weights are held: ZeRO-3 params whose local partition is smaller than the whole."""
    base = [p for _, p in model.named_parameters() if not p.requires_grad]
    zero = [p for p in base if hasattr(p, "ds_id")]
    return {"frozen": len(base), "zero": len(zero),
            "local": sum(int(p.ds_tensor.numel()) for p in zero), "full": sum(int(p.ds_numel) for p in zero)}


def main() -> None:
    job = json.loads(Path(next(a for a in sys.argv[1:] if not a.startswith("--"))).read_text())
    import torch.distributed as dist
    from transformers import TrainerCallback

    from kolm.align import dpo, sft
    from kolm.config import from_dict
    from kolm.train.run_state import close_process_group

    class Record(TrainerCallback):
        def __init__(self, name: str):
            self.name = name

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 1:
                info = {"world": dist.get_world_size(), **partitioned(model)}
                (Path(job["out"]) / f"{self.name}_rank{dist.get_rank()}.json").write_text(json.dumps(info))

    common = {"model": job["model"], "overwrite": True,
              "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
              "train": {"max_steps": 3, "batch_size": 2, "logging_steps": 1, "learning_rate": 1e-3},
              "eval": {"every": 2, "sets": job["eval_sets"]}}
    runs = [(sft.run, sft.SftConfig, "sft", {"data": {"train": [job["sft_data"]], "max_length": 96},
                                             "deepspeed": "zero3"}),
            (dpo.run, dpo.DpoConfig, "dpo", {"data": {"train": [job["dpo_data"]], "max_length": 96},
                                             "deepspeed": job["deepspeed"]})]
    try:
        for run, cls, name, extra in runs:
            cfg = from_dict(cls, {**common, **extra, "output": str(Path(job["out"]) / name)})
            run(cfg, callbacks=[Record(name)])
            dist.barrier()
    finally:
        close_process_group()  # as every kolm command does


if __name__ == "__main__":
    main()
    from kolm.train.run_state import exit_process

    exit_process(0)  # as kolm's commands leave: a finished rank skips interpreter shutdown
