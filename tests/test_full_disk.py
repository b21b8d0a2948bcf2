"""A full disk is one line, and the same command finishes once there is room (issue 28).

Two ways to fill a disk: a real small tmpfs (``mount -t tmpfs``, where this process may mount: root on Linux; skipped
otherwise), grown afterwards with ``mount -o remount,size=...``; and an injected failure at a real write (the
exception that library raises there, from the tmpfs runs), which runs everywhere.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import SHARED, free_port, make_sp_tokenizer
from test_cpt import metrics, pipeline, recipe  # noqa: F401 - pipeline is a fixture
from test_data_build import en_doc, file_digests, ko_doc, write_lines

from kolm.cli import main
from kolm.errors import DiskFullError, KolmError
from kolm.io import files
from kolm.io.files import atomic_output_dir, disk_full, disk_full_line, no_room_message, size_text

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# -- a real small file system -------------------------------------------------------------------------------------
class Tmpfs:
    """A tmpfs mounted at ``path`` (unmounted by the fixture); :meth:`grow` gives it room."""

    def __init__(self, path: Path):
        self.path = path

    def mount(self, size: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.path)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here (needs root, or a container that allows it): {r.stderr.strip()}")

    def grow(self, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)


@pytest.fixture
def tmpfs(tmp_path):
    if sys.platform != "linux" or shutil.which("mount") is None:
        pytest.skip("tmpfs mounts need Linux and mount(8)")
    fs = Tmpfs(tmp_path / "small")
    try:
        yield fs
    finally:
        if os.path.ismount(fs.path):
            if subprocess.run(["umount", str(fs.path)], capture_output=True).returncode:
                subprocess.run(["umount", "-l", str(fs.path)], capture_output=True)


def _raised(fn) -> BaseException:
    """What ``fn`` raised, without its frames (they hold the failed writer and its open file, and so the room)."""
    import gc

    try:
        fn()
    except BaseException as e:  # noqa: BLE001 - the test looks at whatever the library raised
        x: BaseException | None = e
        while x is not None:
            x.__traceback__ = None
            x = x.__context__
        gc.collect()
        return e
    raise AssertionError("the write did not fail")


# -- recognising a full disk ----------------------------------------------------------------------------------------
def test_what_each_writer_raises_on_a_full_tmpfs(tmpfs):
    """The real exceptions of torch, safetensors, numpy, pyarrow and Python's own files on a full disk: some carry no
    errno at all (torch.save to a path, numpy), and those count only when the folder's file system is short of what
    the write needed."""
    import numpy as np
    import pyarrow as pa
    import torch
    from safetensors.torch import save_file

    tmpfs.mount("1m")
    d, x = tmpfs.path, torch.zeros(1 << 20)
    writes = {
        "torch.save": lambda: torch.save({"x": x}, d / "a.pt"),
        "safetensors": lambda: save_file({"x": x}, str(d / "a.safetensors")),
        "numpy": lambda: np.save(d / "a.npy", np.zeros(1 << 20)),
        "pyarrow": lambda: pa.OSFile(str(d / "a.arrow"), "wb").write(b"\0" * (4 << 20)),
        "python": lambda: (d / "a.txt").write_bytes(b"\0" * (4 << 20)),
    }
    found = {}
    for name, write in writes.items():
        found[name] = _raised(write)
        for f in d.iterdir():
            f.unlink()  # the room the failed write took is back; what it needed is not there
    assert "unexpected pos" in str(found["torch.save"]) and not isinstance(found["torch.save"], OSError)
    assert " requested and " in str(found["numpy"]) and found["numpy"].errno is None
    for name, e in found.items():
        certain = name in ("safetensors", "pyarrow", "python")
        assert disk_full(e) is certain, name
        assert disk_full(e, d, need=2 << 20), name
        assert disk_full(e, d, need=1000) is certain, name  # a short write with room to spare: something else


def test_disk_full_in_every_form(tmp_path, monkeypatch):
    import torch

    assert disk_full(ENOSPC) and disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert not disk_full(OSError(errno.EACCES, "Permission denied")) and not disk_full(ValueError("x"))
    assert disk_full(RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"))
    assert not disk_full(KolmError("no space left on device: says a message that is already one line"))
    # torch.save to a file object: the OSError is the context of torch's own error
    class Full:
        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

        def flush(self):
            pass

    assert disk_full(_raised(lambda: torch.save({"x": torch.zeros(8)}, Full())))
    try:
        try:
            raise ENOSPC
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")  # noqa: B904
    except RuntimeError as e:
        chained = e
    assert disk_full(chained)
    short = OSError("1048576 requested and 131072 written")  # numpy's short write: no errno
    monkeypatch.setattr(files, "disk_space", lambda p: (10_000, 10**9, Path("/")))
    assert disk_full(short, tmp_path, need=20_000) and not disk_full(short, tmp_path, need=5_000)
    assert disk_full(short, tmp_path) and not disk_full(short)  # the default: under 64 MB free


def test_the_line(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "disk_space", lambda p: (1_200_000, 30_000_000, Path("/mnt/small")))
    assert no_room_message(tmp_path / "run", "a checkpoint of stage full", 25_100_000, "then resume") == (
        f"no space left in {tmp_path / 'run'}: a checkpoint of stage full needs about 25.1 MB; 1.2 MB free of "
        f"30.0 MB on /mnt/small; then resume")
    assert no_room_message(tmp_path, "x.json", None, "again").startswith(f"no space left in {tmp_path} for x.json; ")
    assert [size_text(n) for n in (0, 999, 1000, 25_100_000, 3 * 10**12)] == ["0 B", "999 B", "1.0 kB", "25.1 MB",
                                                                                "3.0 TB"]
    assert files.disk_space(tmp_path / "not" / "yet")[2] == files.disk_space(tmp_path)[2]


def test_an_output_folder_on_a_full_disk_is_one_line_and_left_out(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DiskFullError, match=rf"^no space left in {tmp_path}: out needs more than the 5 B written "
                                            rf"before the disk filled; .* free of .*; free some space and run the "
                                            rf"command again$"):
        with atomic_output_dir(out) as tmp:
            (tmp / "a").write_bytes(b"12345")
            raise ENOSPC
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="other"), atomic_output_dir(out):
        raise ValueError("other")  # anything else passes unchanged


def test_the_cli_turns_any_full_disk_into_one_line(tmp_path, monkeypatch, capsys):
    import kolm.model.tiny as tiny

    target = tmp_path / "model" / "config.json.tmp"  # named as the file it was to become (atomic_path)

    def run(cfg):
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    monkeypatch.setattr(tiny, "run", run)
    args = ["model", "init", "--output", str(tmp_path / "model"), "--tokenizer", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"kolm: error: no space left in {tmp_path / 'model'} for config.json; ") and \
        err.endswith("; free some space and run the command again\n") and err.count("\n") == 1

    def run_short(cfg):  # torch.save to a path: no errno; the output's disk has no room left
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4139840 vs 4139728")

    monkeypatch.setattr(tiny, "run", run_short)
    monkeypatch.setattr(files, "disk_space", lambda p: (0, 10**9, Path("/")))
    assert main(args) == 2
    assert capsys.readouterr().err.startswith(f"kolm: error: no space left in {tmp_path / 'model'} for the "
                                              f"command's output; 0 B free of 1.0 GB on /; ")
    monkeypatch.setattr(files, "disk_space", lambda p: (10**12, 10**13, Path("/")))
    with pytest.raises(RuntimeError, match="unexpected pos"):  # room to spare: not a full disk, the traceback stays
        main(args)
    assert disk_full_line(ValueError("x"), tmp_path) is None


# -- kolm data build ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data_inputs(tmp_path_factory) -> Path:
    """A recipe (data.yaml) over generated Korean and English files, and its tokenizer."""
    root = tmp_path_factory.mktemp("fd_data")
    rng = random.Random(3)
    ko = [ko_doc(rng, rng.randint(20, 60)) for _ in range(600)]
    en = [en_doc(rng, rng.randint(20, 60)) for _ in range(400)]
    write_lines(root / "ko.txt", ko)
    write_lines(root / "en.txt", en)
    llama2 = SHARED / "tokenizers" / "llama2"
    tok = llama2 if (llama2 / "tokenizer.json").is_file() else make_sp_tokenizer(ko[:200] + en[:200], root / "tok",
                                                                                  vocab_size=800)
    recipe = {"tokenizer": str(tok), "seq_len": 64, "seed": 0, "mix": {"ko": 0.7, "en": 0.3},
              "sources": [{"name": "ko", "lang": "ko", "paths": ["ko.txt"]},
                          {"name": "en", "lang": "en", "paths": ["en.txt"]}],
              "validation": {"fraction": 0.03, "max_docs": 30}, "num_proc": 0, "progress": False,
              "batch_bytes": 16384, "checkpoint_mb": 0.05, "shard_size": 200}
    (root / "data.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["data", "build", str(root / "data.yaml"), "--output", str(root / "ref"), "keep_work=true"]) == 0
    work = root / "ref" / ".work"
    (root / "sizes.json").write_text(json.dumps({"work": files.folder_bytes(work)}))
    shutil.rmtree(work)
    return root


def _one_error_line(err: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    lines = [x for x in err.splitlines() if x.startswith("kolm: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def _inject(monkeypatch, where: str) -> None:
    """Make one real write of the build fail as a full disk makes it fail there."""
    from kolm.artifacts import DataFolder
    from kolm.data import build, dedup, pack, scan

    def nth(obj, name, n, error, before=None):
        real, calls = getattr(obj, name), []

        def wrapper(*a, **k):
            calls.append(1)
            if len(calls) == n:
                if before:
                    before(*a)
                raise error
            return real(*a, **k)

        monkeypatch.setattr(obj, name, wrapper)

    if where == "spill":  # Python's buffered spill files (scan.py, phase 1), after a checkpoint
        nth(scan.Scanner, "_handle_tokens", 6, ENOSPC)
    elif where == "keys":  # numpy's np.save of a key-set run: a short write without errno, on a disk now full
        nth(dedup.KeySet, "_persist", 4, OSError("131072 requested and 65536 written"))
        monkeypatch.setattr(files, "disk_space", lambda p: (4096, 10**8, Path("/")))
    elif where == "shard":  # pyarrow's shard writer (pack.py, phase 2): the second shard
        nth(pack, "_write_batches", 2, OSError(errno.ENOSPC, "Error writing bytes to file. Detail: [errno 28] No "
                                                                 "space left on device"))
    elif where == "manifest":
        nth(DataFolder, "write_manifest", 1, ENOSPC)
    # the failure is recorded in .work/build.json: on a full disk that write fails too (the chained traceback users
    # saw came from there)
    real_write = build._Marker.write

    def marker_write(self, data):
        if data.get("failed"):
            raise ENOSPC
        real_write(self, data)

    monkeypatch.setattr(build._Marker, "write", marker_write)


@pytest.mark.parametrize("where", ["spill", "keys", "shard", "manifest"])
def test_data_build_full_disk_is_one_line_and_the_same_command_finishes(data_inputs, where, tmp_path, monkeypatch,
                                                                         capsys):
    out = tmp_path / "out"
    cmd = ["data", "build", str(data_inputs / "data.yaml"), "--output", str(out)]
    with monkeypatch.context() as m:
        _inject(m, where)
        assert main(cmd) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"kolm: error: no space left in {out}: the rest of the build (") or where == "manifest"
    assert line.endswith("; free some space and run the same command again to resume") and " needs about " in line
    assert main(cmd) == 0
    assert json.loads((out / "manifest.json").read_text())["resumed"] is True
    assert file_digests(out) == file_digests(data_inputs / "ref")


@pytest.mark.parametrize("room,num_proc,phase", [(0.1, 0, "phase 1's token spills"), (0.6, 1, "phase 1's token spills"),
                                                 (1.5, 0, "train shards of about")])
def test_data_build_on_a_full_tmpfs_finishes_after_it_grows(data_inputs, tmpfs, room, num_proc, phase, capsys):
    """Phase 1 (early, and with a worker process, as the user ran it) and phase 2 run out of room on a real file
    system (``room`` x the size the work folder reaches)."""
    work = json.loads((data_inputs / "sizes.json").read_text())["work"]
    tmpfs.mount(f"{int(room * work) // 4096 * 4}k")
    out = tmpfs.path / "out"
    cmd = ["data", "build", str(data_inputs / "data.yaml"), "--output", str(out), f"num_proc={num_proc}"]
    assert main(cmd) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"kolm: error: no space left in {out}: the rest of the build (") and phase in line
    assert f" free of {size_text(files.disk_space(out)[1])} on {tmpfs.path}; " in line
    tmpfs.grow("64m")
    assert main(cmd) == 0
    assert file_digests(out) == file_digests(data_inputs / "ref")


# -- kolm train cpt -------------------------------------------------------------------------------------------------
STAGES = [{"name": "full", "kind": "full", "max_steps": 4}]


def cpt_recipe(root: Path, name: str, output: Path | None = None) -> Path:
    r = recipe(root, name, STAGES, checkpoint={"every": 2, "keep": 2})
    if output is not None:
        data = yaml.safe_load(r.read_text())
        data["output"] = str(output)
        r.write_text(yaml.safe_dump(data))
    return r


@pytest.fixture(scope="module")
def uninterrupted(pipeline) -> list[dict]:  # noqa: F811
    assert main(["train", "cpt", str(cpt_recipe(pipeline, "fd_ref"))]) == 0
    return metrics(pipeline / "runs" / "fd_ref")


def same_metrics(a: list[dict], b: list[dict], tol: float = 1e-6) -> None:
    assert [(x["kind"], x["step"]) for x in a] == [(x["kind"], x["step"]) for x in b]
    for x, y in zip(a, b, strict=True):
        if x["kind"] == "train":
            for k in ("loss", "grad_norm", "lr", "tokens_seen"):
                assert y[k] == pytest.approx(x[k], abs=tol), (k, x, y)
        else:
            for lang in x["eval"]:
                assert y["eval"][lang]["bpb"] == pytest.approx(x["eval"][lang]["bpb"], abs=tol), (x, y)


def _resume_finishes(r: Path, run: Path, uninterrupted: list[dict], capsys) -> None:
    assert main(["train", "cpt", str(r), "--resume"]) == 0
    out = capsys.readouterr().out
    assert f"kolm: removing incomplete checkpoint {run / 'stages' / '00-full' / 'checkpoint-4'}" in out
    same_metrics(uninterrupted, metrics(run))
    assert (run / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_cpt_checkpoint_write_fails_is_one_line_and_resume_finishes(pipeline, uninterrupted, monkeypatch,  # noqa: F811
                                                                     capsys):
    """The optimizer state of the second checkpoint cannot be written (torch.save to a path on a full disk: part of
    the file, then torch's "unexpected pos", no errno); the first checkpoint is complete."""
    import torch

    from kolm.train.run_state import checkpoint_bytes

    real = torch.save
    r, run = cpt_recipe(pipeline, "fd_inject"), pipeline / "runs" / "fd_inject"
    with monkeypatch.context() as m:

        def save(obj, f, *a, **k):
            if str(f).endswith(os.path.join("checkpoint-4", "optimizer.pt")):
                Path(f).write_bytes(b"\0" * 4096)
                m.setattr(files, "disk_space", lambda p: (0, 40_000_000, Path("/small")))  # the disk is full now
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 4160 vs 4096")
            return real(obj, f, *a, **k)

        m.setattr(torch, "save", save)
        assert main(["train", "cpt", str(r)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    need = size_text(checkpoint_bytes(run / "stages" / "00-full" / "checkpoint-2"))
    assert line == (f"kolm: error: no space left in {run}: a checkpoint of stage full needs about {need}; 0 B free "
                    f"of 40.0 MB on /small; free some space, then continue with: kolm train cpt ... --resume")
    _resume_finishes(r, run, uninterrupted, capsys)


@pytest.mark.slow
def test_cpt_on_a_full_tmpfs_resumes_after_it_grows(pipeline, uninterrupted, tmpfs, capsys):  # noqa: F811
    """Room for the first checkpoint (~25 MB) but not the second: a real write fails (torch or safetensors)."""
    tmpfs.mount("40m")
    run = tmpfs.path / "run"
    r = cpt_recipe(pipeline, "fd_tmpfs", output=run)
    assert main(["train", "cpt", str(r)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith(f"kolm: error: no space left in {run}: a checkpoint of stage full needs about ")
    assert line.endswith(f" free of 41.9 MB on {tmpfs.path}; free some space, then continue with: kolm train cpt ... "
                         f"--resume")
    tmpfs.grow("200m")
    _resume_finishes(r, run, uninterrupted, capsys)


TWO_RANKS = """
import errno, json, os, sys
from pathlib import Path

import torch.distributed as dist

from kolm.errors import DiskFullError
from kolm.train.run_state import ends_on_full_disk

dist.init_process_group("gloo")
rank, failing = dist.get_rank(), json.loads(os.environ["FAILING"])
keep = dist.new_group([0, 1])  # a group someone else holds on to, as DeepSpeed does: leaving it closes nothing
dist.barrier()  # both ranks are set up
try:
    with ends_on_full_disk(Path(sys.argv[1]), "a checkpoint of stage full", lambda: 25_000_000):
        if rank in failing:
            raise OSError(errno.ENOSPC, "No space left on device")
        dist.barrier()  # the collective the other rank never joins
    result = "passed"
except DiskFullError as e:
    result = f"error: {e}"
except SystemExit as e:
    result = f"exit {e.code}"
print(json.dumps({"rank": rank, "result": result}), flush=True)
os._exit(0)
"""


@pytest.mark.parametrize("failing", [[1], [0], [0, 1]])
def test_two_gloo_ranks_one_line_from_rank_0(tmp_path, failing):
    """The protocol of kolm.train.run_state.ends_on_full_disk on two real gloo ranks: rank 0 ends with the line,
    whichever rank ran out of room; the other leaves quietly with status 0 (the launcher then leaves rank 0 alone)."""
    script = tmp_path / "two_ranks.py"
    script.write_text(TWO_RANKS)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "FAILING": json.dumps(failing), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path)], env={**env, "RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    results = {}
    for out, err in outs:
        assert "Traceback" not in err, err[-2000:]
        row = json.loads(out.strip().splitlines()[-1])
        results[row["rank"]] = row["result"]
    assert results[0].startswith(f"error: no space left in {tmp_path}: a checkpoint of stage full needs about "
                                 f"25.0 MB; "), results
    assert results[1] == "exit 0", results


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("rank", [1, 0])
def test_zero3_one_rank_out_of_room_ends_every_rank_with_one_line_from_rank_0(pipeline, rank):  # noqa: F811
    """2 CPU ranks, ZeRO-3: only rank ``rank`` cannot write its optimizer partition. Every rank exits, and the one
    line comes from rank 0 (a rank that had to print it itself says "rank N:")."""
    r = recipe(pipeline, f"fd_z3_{rank}", [{"name": "full", "kind": "full", "max_steps": 2}], deepspeed="zero3",
               checkpoint={"every": 2, "keep": 2}, eval={"every": 0})
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1", "KOLM_TEST_FAIL_RANK": str(rank),
           "KOLM_TEST_FAIL_AT": f"checkpoint-2/global_step2/zero_pp_rank_{rank}_mp_rank_00_optim_states"}
    script = Path(__file__).with_name("dist_full_disk_script.py")
    cmd = ["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), str(script), "train", "cpt", str(r)]
    t = time.time()
    proc = subprocess.run(cmd, cwd=pipeline, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    line = _one_error_line(out)
    run = pipeline / "runs" / f"fd_z3_{rank}"
    assert line.startswith(f"kolm: error: no space left in {run}: a checkpoint of stage full needs about "), line
    assert "received SIGTERM" not in out, out[-3000:]
    assert time.time() - t < 850
