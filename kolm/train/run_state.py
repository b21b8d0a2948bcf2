"""Run-folder state of ``kolm train cpt``: complete-checkpoint markers, resume points, metrics rewinding.

The HF Trainer writes a checkpoint folder file by file, so a crash mid-write leaves a folder that looks like a
checkpoint but is not. After the Trainer has written everything (``on_save``), every rank meets at a barrier and
rank 0 writes ``kolm_complete.json`` listing the files and their sizes. Resuming picks the newest checkpoint
whose marker exists and whose files are all there with those sizes; rank 0 removes every incomplete checkpoint
(reported), so that the Trainer rewrites a checkpoint of the same step into a clean folder: a kill mid-write leaves
safetensors' temporary files (``.tmpXXXXXX``) and half-written partitions that a marker must never list.
Before the marker is written, the checkpoint's files get the permissions of the user's umask (safetensors writes
0600 through a temporary file).

A full disk (:func:`ends_on_full_disk`) ends every rank with one line, printed by rank 0: which folder, how much room
is left there and roughly how much a checkpoint (or a final model) needs, and that ``--resume`` continues. The
incomplete checkpoint it leaves is removed on resume like any other.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

from kolm.errors import DiskFullError
from kolm.io.files import apply_umask, atomic_write_text, disk_full, no_room_message

MARKER = "kolm_complete.json"


def is_main() -> bool:
    """Rank 0, or a process without ranks (a rank whose group :func:`close_process_group` closed stays what it was)."""
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank() == 0
    except ImportError:
        pass
    return _FORMER_RANK in (None, 0)


def barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


SHM_BUFFER = "deepspeed_allreduce_buffer"


def release_shared_memory(wait: bool = True) -> Path | None:
    """Unlink this rank's DeepSpeed shared-memory all-reduce buffer; returns its path when one was unlinked.

    On CPU (``DS_ACCELERATOR=cpu``, every rank on one machine), DeepSpeed's shm all-reduce (ops/csrc/cpu/comm/shm.cpp)
    creates ``/dev/shm/deepspeed_allreduce_buffer_<uid>_<MASTER_ADDR>_<MASTER_PORT>_<rank>`` (66 MB) per rank at
    ``init_distributed`` and never unlinks it, so each run leaves them in memory until the machine restarts. Once every
    rank has mapped every buffer (``wait``: a barrier, called after init on every rank) each rank unlinks its own
    name: the mappings stay valid and the memory is freed when the last rank exits, however it exits. At the end of a
    command (``wait=False``) it only unlinks what is still there. A no-op without a process group or buffer (GPUs)."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    if wait:
        dist.barrier()
    env = os.environ
    path = Path("/dev/shm") / (f"{SHM_BUFFER}_{os.getuid()}_{env.get('MASTER_ADDR', '')}_{env.get('MASTER_PORT', '')}"
                               f"_{dist.get_rank()}")
    try:
        path.unlink()
    except OSError:  # none (GPU, several machines), or already released
        return None
    return path


_WAS_RANK = False  # close_process_group closed a process group: this process is a finished rank (a process fact)
_FORMER_RANK: int | None = None  # and the rank it was


def close_process_group() -> None:
    """Destroy the torch.distributed process group of a finished rank (DeepSpeed, torchrun): every kolm command calls
    this at its end, and so must any script that runs kolm's stages on several ranks itself (then leave with
    :func:`exit_process`). Unlinks what is left of this rank's shared-memory buffer first (a rank initialised outside
    kolm's commands). Never raises: the work's own result stands."""
    global _WAS_RANK, _FORMER_RANK
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        _WAS_RANK, _FORMER_RANK = True, dist.get_rank()
        release_shared_memory(wait=False)
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - the work's own result stands; a failed teardown must not replace it
            pass


def exit_process(code: int | str | None) -> NoReturn:
    """Leave the process with ``code`` (a ``SystemExit`` code: None is 0, a message is printed and gives 1).

    A rank whose process group :func:`close_process_group` closed leaves with ``os._exit`` once its trackers are
    finished and its output flushed, without interpreter shutdown. There, after the work is done and saved, C++
    threads of torch.distributed/DeepSpeed can abort the process ("terminate called without an active exception",
    status -6; the faulthandler shows no Python frame), the launcher then kills the other ranks and reports a failed
    run. Measured: 1 in 23 two-rank ZeRO-3 ``kolm train cpt`` runs aborted so, with the group destroyed first; none
    of 45 leaving here. Every file kolm writes is closed by then; W&B's run (finished at shutdown otherwise)
    is finished here, and logging's handlers are flushed. Any other process exits normally."""
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    if not _WAS_RANK:
        raise SystemExit(code)
    import logging

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        try:
            wandb.finish(exit_code=code)
        except Exception as e:  # noqa: BLE001 - the run's own result stands
            print(f"kolm: W&B could not finish the run: {e}", file=sys.stderr)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or a broken pipe: nothing more can reach it
            pass
    os._exit(code)


def write_marker(ckpt: Path, step: int) -> None:
    """Record ``ckpt`` as complete: its files and sizes (call on rank 0 once every rank has written its part)."""
    apply_umask(ckpt)
    files = {str(p.relative_to(ckpt)): p.stat().st_size for p in sorted(ckpt.rglob("*"))
             if p.is_file() and p.name != MARKER}
    atomic_write_text(ckpt / MARKER, json.dumps({"step": step, "files": files}), fsync=True)


def is_complete(ckpt: Path) -> bool:
    try:
        info = json.loads((ckpt / MARKER).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return all((ckpt / f).is_file() and (ckpt / f).stat().st_size == n for f, n in info["files"].items())


def _checkpoints(stage_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every ``checkpoint-N`` folder of a stage, newest first."""
    if not stage_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in stage_dir.iterdir()
             if (m := re.fullmatch(r"checkpoint-(\d+)", p.name)) and p.is_dir()]
    return sorted(found, reverse=True)


def newest_complete_checkpoint(stage_dir: Path) -> tuple[Path, int] | None:
    """(folder, step) of the newest complete checkpoint of a stage, or None."""
    for step, p in _checkpoints(stage_dir):
        if is_complete(p):
            return p, step
    return None


def resume_point(stage_dir: Path) -> tuple[Path, int] | None:
    """:func:`newest_complete_checkpoint`; on rank 0 also remove every incomplete checkpoint, with one line each
    (call :func:`barrier` before the Trainer writes again)."""
    found = newest_complete_checkpoint(stage_dir)
    if is_main():
        for _, p in _checkpoints(stage_dir):
            if not is_complete(p):
                size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
                print(f"kolm: removing incomplete checkpoint {p} ({size / 1e6:.1f} MB; a kill during its write)",
                      flush=True)
                shutil.rmtree(p, ignore_errors=True)
    return found


def rewind_metrics(path: Path, stage_index: int, step: int | None) -> None:
    """Drop the metric lines that resuming stage ``stage_index`` at global ``step`` produces again: that stage's
    rows after ``step`` and every later stage's; ``step`` None (the stage starts over) drops all of that stage's
    rows, its step-0 evaluation included."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        index = row.get("stage_index", 0)
        if index < stage_index or (index == stage_index and step is not None and row.get("step", 0) <= step):
            keep.append(line)
    atomic_write_text(path, "".join(x + "\n" for x in keep))  # a full disk must not cost the rows kept


# -------------------------------------------------------------------------------------------------------- a full disk
RESUME_HINT = "free some space, then continue with: kolm train cpt ... --resume"
ERROR_KEY, REPORTED_KEY = "kolm/error", "kolm/reported"  # in the process group's store (rank 0 hosts it)
REPORT_WAIT_S = 5.0  # not gloo: how long a rank waits to see whether rank 0 has said it before saying it itself
# what a collective says when another rank has gone (gloo at once; NCCL once its watchdog notices)
_LOST_PEER = re.compile(r"Connection closed by peer|Connection reset by peer|Broken pipe|remote process exited")


def checkpoint_bytes(ckpt: Path) -> int:
    """The size of a complete checkpoint, from its marker."""
    return sum(json.loads((ckpt / MARKER).read_text())["files"].values())


def checkpoint_need(stage_dir: Path, model: Any, deepspeed: bool) -> int:
    """Roughly the bytes one more checkpoint of a stage takes: the size of its newest complete checkpoint (a stage's
    checkpoints are all alike), else the weights plus the optimizer's states from the parameter counts (Adam: two
    moments per trained parameter, in the weights' dtype; under DeepSpeed an fp32 copy and two fp32 moments)."""
    found = newest_complete_checkpoint(stage_dir)
    if found is not None:
        return checkpoint_bytes(found[0])
    weights = trained = 0
    for p in model.parameters():
        n = int(getattr(p, "ds_numel", p.numel()))  # ZeRO-3 holds a partition; ds_numel is the whole tensor
        weights += n * p.element_size()
        trained += n * (12 if deepspeed else 2 * p.element_size()) if p.requires_grad else 0
    return weights + trained


def _store() -> Any:
    """The store of the default process group (rank 0 hosts it), or None."""
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    try:
        from torch.distributed.distributed_c10d import _get_default_store

        return _get_default_store()
    except Exception:  # noqa: BLE001 - no store: every rank speaks for itself
        return None


@contextlib.contextmanager
def _no_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (a store whose host has gone makes torch's C++ side print a stack of frames)."""
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _posted(store: Any, key: str, wait_s: float = 0.0) -> str | None:
    """The value of ``key`` in the store, waiting up to ``wait_s`` for it; None when it is not set (or the store went
    with rank 0)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with _no_stderr():
                if store.check([key]):
                    return store.get(key).decode()
        except Exception:  # noqa: BLE001 - the store is gone
            return None
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


@contextlib.contextmanager
def ends_on_full_disk(folder: Path, what: str, need: Callable[[], int | None]) -> Iterator[None]:
    """End the run with one line when the block fails for lack of space on any rank, and every rank with it.

    The line names ``folder``, what was being written (``what``, roughly ``need()`` bytes), the room left, and says
    that ``--resume`` continues. Rank 0 prints it. Another rank that ran out of room posts it in the process group's
    store and leaves with status 0 (:func:`_tell_rank0`); its exit makes rank 0's next collective with it fail
    ("Connection closed by peer" under gloo), rank 0 finds the message and prints it, and its status is the run's. A
    launcher stops the other ranks when one leaves with an error, which would cut rank 0 off before it has printed: so
    the ranks that did not fail also leave quietly with status 0 once they lose a peer. Any other error passes
    unchanged.
    """
    try:
        yield
    except Exception as e:
        store = _store()
        try:
            n = need()
        except Exception:  # noqa: BLE001 - the size is a hint; the line stands without it
            n = None
        if disk_full(e, folder, n):
            message = no_room_message(folder, what, n, RESUME_HINT)
            if store is not None and not is_main():
                message = _tell_rank0(store, message)
        elif store is not None and any(isinstance(x, RuntimeError) and _LOST_PEER.search(str(x))
                                       for x in (e, e.__cause__, e.__context__)):
            if not is_main():
                raise SystemExit(0) from None
            if _posted(store, REPORTED_KEY):  # the rank that failed has printed it itself (not gloo)
                raise SystemExit(2) from None
            message = _posted(store, ERROR_KEY, wait_s=2.0)  # posted just before that rank left
            if message is None:
                raise
        else:
            raise
        if store is not None:
            with contextlib.suppress(Exception):
                store.set(REPORTED_KEY, "yes")
        raise DiskFullError(message) from None


def _tell_rank0(store: Any, message: str) -> str:
    """Hand rank 0 this (non-zero) rank's message (see :func:`ends_on_full_disk`) and leave quietly (SystemExit); or
    return the message as this rank must print it: a backend other than gloo (NCCL) may keep rank 0 waiting in a
    collective for this rank until the launcher kills it, so there this rank prints it, unless rank 0 has within
    :data:`REPORT_WAIT_S` (it ran out of room too)."""
    import torch.distributed as dist

    rank, gloo = dist.get_rank(), dist.get_backend() == "gloo"
    if _posted(store, REPORTED_KEY):  # rank 0 ran out of room too and has said so
        raise SystemExit(0 if gloo else 2)
    if gloo:
        try:
            with _no_stderr():
                store.set(ERROR_KEY, message)
        except Exception:  # noqa: BLE001 - rank 0 is gone: it has said why
            pass
        raise SystemExit(0)
    if _posted(store, REPORTED_KEY, wait_s=REPORT_WAIT_S):
        raise SystemExit(2)
    return f"rank {rank}: {message}"
