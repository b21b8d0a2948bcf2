"""``kolm train cpt`` with one rank's checkpoint write failing for lack of space, launched by tests/test_full_disk.py:

    KOLM_TEST_FAIL_RANK=1 KOLM_TEST_FAIL_AT=checkpoint-4/global_step4/zero_pp_rank_1 \
    DS_ACCELERATOR=cpu deepspeed --num_gpus 2 --master_port PORT tests/dist_full_disk_script.py train cpt RECIPE

On rank ``KOLM_TEST_FAIL_RANK`` a ``torch.save`` to a path containing ``KOLM_TEST_FAIL_AT`` writes part of the file
and fails as torch's stream writer fails when the disk fills up under a file object (a RuntimeError "unexpected pos"
raised while handling ``OSError(ENOSPC)``); the other rank writes everything, as happens when one rank's partition
is the one that no longer fits. Everything else is ``kolm`` as the console script runs it.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def fail_one_write() -> None:
    import torch

    real = torch.save
    where = os.environ["KOLM_TEST_FAIL_AT"]

    def save(obj, f, *args, **kwargs):
        if isinstance(f, (str, os.PathLike)) and where in str(f):
            Path(f).write_bytes(b"\0" * 4096)  # what fitted before the disk was full
            try:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4160 vs 4096")  # noqa: B904
        return real(obj, f, *args, **kwargs)

    torch.save = save


if __name__ == "__main__":
    if os.environ.get("RANK", "0") == os.environ["KOLM_TEST_FAIL_RANK"]:
        fail_one_write()
    from kolm.cli import entry

    entry()
