"""Run-folder state of ``kolm train cpt``: complete-checkpoint markers, resume points, metrics rewinding.

The HF Trainer writes a checkpoint folder file by file, so a crash mid-write leaves a folder that looks like a
checkpoint but is not. After the Trainer has written everything (``on_save``), every rank meets at a barrier and
rank 0 writes ``kolm_complete.json`` listing the files and their sizes. Resuming picks the newest checkpoint
whose marker exists and whose files are all there with those sizes; anything newer is ignored (and reported).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

MARKER = "kolm_complete.json"


def is_main() -> bool:
    try:
        import torch.distributed as dist

        return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
    except ImportError:
        return True


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def write_marker(ckpt: Path, step: int) -> None:
    files = {str(p.relative_to(ckpt)): p.stat().st_size for p in sorted(ckpt.rglob("*"))
             if p.is_file() and p.name != MARKER}
    tmp = ckpt / (MARKER + ".tmp")
    with open(tmp, "w") as fh:
        json.dump({"step": step, "files": files}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, ckpt / MARKER)


def is_complete(ckpt: Path) -> bool:
    try:
        info = json.loads((ckpt / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return all((ckpt / f).is_file() and (ckpt / f).stat().st_size == n for f, n in info["files"].items())


def newest_complete_checkpoint(stage_dir: Path) -> tuple[Path, int] | None:
    """(folder, step) of the newest complete checkpoint of a stage, or None."""
    if not stage_dir.is_dir():
        return None
    found = []
    for p in stage_dir.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    for step, p in sorted(found, reverse=True):
        if is_complete(p):
            return p, step
        if is_main():
            print(f"kolm: ignoring incomplete checkpoint {p}", flush=True)
    return None


def rewind_metrics(path: Path, stage_index: int, step: int) -> None:
    """Drop metric lines written after the resume point (they will be produced again)."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("stage_index", 0) < stage_index or (row.get("stage_index") == stage_index
                                                        and row.get("step", 0) <= step):
            keep.append(line)
    path.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
