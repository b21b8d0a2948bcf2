"""ZeRO-3 resize on several CPU ranks, launched by tests/test_resize.py::test_zero3_resize_matches_single_process:

    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 --master_port PORT tests/dist_resize_script.py JOBS.json

Each job ({"model", "tokenizer", "out", "init", "pad", "seed", "ids"}) loads the model partitioned by ZeRO-3
(transformers' ``HfDeepSpeedConfig`` + ``from_pretrained`` -> ``zero.Init``), resizes it with
``kolm.model.resize.resize_model``, records what each rank holds (``out/rank{r}.json``), runs a forward pass
through a DeepSpeed engine on ``ids`` (``out/logits.pt``), then gathers and saves the model on rank 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DS_CONFIG = {
    "train_micro_batch_size_per_gpu": 1,
    "gradient_accumulation_steps": 1,
    # threshold 0: every parameter stays partitioned, even tiny ones (no persistent full copies)
    "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},
    "bf16": {"enabled": False},
    "fp16": {"enabled": False},
}


def held(model) -> dict:
    """Per parameter: full size vs what this rank stores (its partition) and the placeholder's size."""
    out = {}
    for name, p in model.named_parameters():
        out[name] = {"zero": hasattr(p, "ds_id"), "full": int(getattr(p, "ds_numel", p.numel())),
                     "local": int(p.ds_tensor.numel()) if hasattr(p, "ds_tensor") else int(p.numel()),
                     "placeholder": int(p.numel()), "shape": list(getattr(p, "ds_shape", p.shape))}
    return out


def main() -> None:
    jobs = json.loads(Path(next(a for a in sys.argv[1:] if not a.startswith("--"))).read_text())
    import deepspeed
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM
    from transformers.integrations import HfDeepSpeedConfig
    from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled

    from kolm.model.resize import resize_model
    from kolm.train.run_state import close_process_group, release_shared_memory

    deepspeed.init_distributed()
    release_shared_memory()
    try:
        hf_ds = HfDeepSpeedConfig(DS_CONFIG)  # must stay referenced: transformers keeps only a weakref
        assert is_deepspeed_zero3_enabled() and hf_ds.is_zero3()
        rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
        for job in jobs:
            model = AutoModelForCausalLM.from_pretrained(job["model"], use_safetensors=True)
            before = held(model)
            stats = resize_model(model, Tokenizer.from_file(str(Path(job["tokenizer"]) / "tokenizer.json")),
                                 Tokenizer.from_file(str(Path(job["model"]) / "tokenizer.json")), init=job["init"],
                                 pad_to_multiple_of=job["pad"], seed=job["seed"])
            after = held(model)
            engine, *_ = deepspeed.initialize(model=model, config=DS_CONFIG)
            with torch.no_grad():
                logits = engine(input_ids=torch.tensor([job["ids"]])).logits
            in_engine = held(model)
            with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
                state = {k: v.detach().clone() for k, v in model.state_dict().items()} if rank == 0 else None
            out = Path(job["out"])
            if rank == 0:
                model.save_pretrained(out, state_dict=state)
                torch.save(logits, out / "logits.pt")
            torch.distributed.barrier()
            (out / f"rank{rank}.json").write_text(json.dumps({"world": world, "stats": stats, "before": before,
                                                              "after": after, "in_engine": in_engine}))
            del engine, model
        torch.distributed.barrier()
    finally:
        close_process_group()  # as every kolm command does


if __name__ == "__main__":
    main()
    from kolm.train.run_state import exit_process

    exit_process(0)  # as kolm's commands leave: a finished rank skips interpreter shutdown
