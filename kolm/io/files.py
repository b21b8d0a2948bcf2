"""Files on disk: reading a JSON object, hashing a file, and writing files and folders so that a reader never sees
half of one, with the permissions of the user's umask.

Every kolm writer that replaces a file goes through :func:`atomic_path` (or its shorthands :func:`atomic_write_text`
and :func:`atomic_write_bytes`): the data goes to a temporary file beside the target, which then replaces the target
in one ``os.replace``. A kill in between leaves the old file (or none) and a temporary file that the next write
overwrites. Whole output folders go through :func:`atomic_output_dir` the same way.

A full disk is one line: :func:`disk_full` recognises a write that failed for lack of space in whatever form the
writing library reports it, and :func:`no_room_message` says where, how much room is left and roughly how much the
write needs (:class:`kolm.errors.DiskFullError`).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from kolm.errors import DiskFullError, KolmError


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json_object(path: Path, what: str = "JSON file") -> dict[str, Any]:
    """The JSON object in ``path``; an unreadable file, bad JSON or another JSON type raises a one-line KolmError
    naming the file and ``what`` it should be."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KolmError(f"{path}: not a readable {what}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise KolmError(f"{path}: not a readable {what}: expected a JSON object, got {type(data).__name__}")
    return data


def temp_name(path: Path, unique: bool = False) -> Path:
    """The temporary file beside ``path``: ``NAME.tmp``, or ``.NAME.tmp-PID`` with ``unique`` (for files that
    several processes may write at once)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}" if unique else f"{path.name}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path, *, unique: bool = False, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for the caller to write; when the block ends without error it
    replaces ``path`` (``os.replace``), on error it is removed. ``fsync``: flush the file to disk before the rename
    (for records that must survive a power loss, e.g. checkpoint markers)."""
    path = Path(path)
    tmp = temp_name(path, unique)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str, *, unique: bool = False, fsync: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file (:func:`atomic_path`)."""
    with atomic_path(path, unique=unique, fsync=fsync) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes, *, unique: bool = False, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through a temporary file (:func:`atomic_path`)."""
    with atomic_path(path, unique=unique, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def current_umask() -> int:
    """The process's umask (read from /proc on Linux, where reading it changes nothing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


def apply_umask(path: str | Path) -> None:
    """Give ``path`` and everything below it at least the permissions that the user's umask gives new files and
    folders (``0666 & ~umask``, ``0777 & ~umask``); never removes one.

    Writers that go through temporary files create them private: ``tempfile.mkdtemp`` makes 0700 folders and
    safetensors (``save_file``, ``save_pretrained``) 0600 files, which the other users of a shared cluster then
    cannot read even with umask 022.
    """
    mask = current_umask()
    root = Path(path)
    for p in [root, *root.rglob("*")] if root.is_dir() else [root]:
        if p.is_symlink():
            continue
        mode = p.stat().st_mode & 0o7777
        want = mode | ((0o777 if p.is_dir() else 0o666) & ~mask)
        if want != mode:
            os.chmod(p, want)


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it is renamed to ``out``, on error removed.

    No partial output folder is ever left behind under the final name; the folder and its files get the
    permissions of the user's umask (:func:`apply_umask`), not the 0700 of a temporary folder.
    """
    out = Path(out)
    if out.exists() and any(out.iterdir()) if out.is_dir() else out.exists():
        if not overwrite:
            raise KolmError(f"output exists and is not empty: {out} (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
    except BaseException as e:
        written = folder_bytes(tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception) and disk_full(e, out.parent):
            raise DiskFullError(no_room_message(out.parent, out.name, f"more than the {size_text(written)} written "
                                                f"before the disk filled", "free some space and run the command "
                                                "again")) from None
        raise
    move_into_place(tmp, out)


def move_into_place(tmp: str | Path, out: str | Path) -> None:
    """Give the finished folder ``tmp`` the umask's permissions and put it at ``out``, replacing what is there
    (the last step of every folder written under a temporary name: a kill before it leaves ``out`` as it was)."""
    tmp, out = Path(tmp), Path(out)
    apply_umask(tmp)
    if out.exists():
        shutil.rmtree(out) if out.is_dir() else out.unlink()
    os.replace(tmp, out)


# -------------------------------------------------------------------------------------------------------- a full disk
NO_ROOM_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# The OS error as libraries quote it where no errno survives (safetensors: "os error 28", pyarrow: "[errno 28]")
_NO_ROOM_TEXT = re.compile(r"No space left on device|Disk quota exceeded|os error (?:28|122)\b|errno (?:28|122)\b")
# A write that failed without saying why: torch's stream writer (torch.save to a path: checkpoints, DeepSpeed's
# partitions) and numpy's tofile/save ("N requested and M written"). A full disk is their usual cause.
_SHORT_WRITE_TEXT = re.compile(r"unexpected pos \d+ vs \d+|PytorchStreamWriter failed writing|file write failed"
                               r"|iostream error|\d+ requested and \d+ written")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and the exceptions it was raised from or while handling (``__cause__``, ``__context__``)."""
    todo, seen = [exc], set()
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def disk_space(path: str | Path) -> tuple[int, int, Path]:
    """(bytes free to this user, size, mount point) of the file system that holds ``path`` (or would: the nearest
    existing folder above it counts)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    mount = p.resolve()
    while not os.path.ismount(mount) and mount != mount.parent:
        mount = mount.parent
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize, mount


def disk_full(exc: BaseException, folder: str | Path | None = None, need: int | None = None) -> bool:
    """Whether ``exc`` is a write that failed for lack of space: certainly when it or an exception in its chain is
    ENOSPC/EDQUOT (an ``OSError``'s errno, or the OS error quoted by safetensors or pyarrow); a short write that
    carries no errno (torch's stream writer, numpy) counts when ``folder``'s file system has less than ``need`` bytes
    free (without ``need``: under 64 MB or 1% of its size). A :class:`KolmError` is never one: it has its message."""
    if isinstance(exc, KolmError):
        return False
    short = False
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno in NO_ROOM_ERRNOS:
            return True
        text = str(e)
        if _NO_ROOM_TEXT.search(text):
            return True
        short = short or bool(isinstance(e, (OSError, RuntimeError)) and _SHORT_WRITE_TEXT.search(text))
    if not short or folder is None:
        return False
    free, total, _ = disk_space(folder)
    return free < (need if need is not None else max(64 << 20, total // 100))


def size_text(n: int | float) -> str:
    """25_000_000 -> "25.0 MB" (decimal units, as ``df -H``)."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def folder_bytes(path: str | Path) -> int:
    """The size of every file under ``path`` (0 when it is gone)."""
    total = 0
    for p in Path(path).rglob("*"):
        with contextlib.suppress(OSError):
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
    return total


def no_room_message(folder: str | Path, what: str, need: int | str | None, then: str) -> str:
    """One line for a full disk: ``no space left in FOLDER: WHAT needs about NEED; FREE free of SIZE on MOUNT; THEN``
    (``need`` in bytes, or words: ``more than ...``; without it ``no space left in FOLDER for WHAT; ...``)."""
    free, total, mount = disk_space(folder)
    if isinstance(need, int):
        need = f"about {size_text(need)}"
    head = f"{folder}: {what} needs {need}" if need else f"{folder} for {what}"
    return f"no space left in {head}; {size_text(free)} free of {size_text(total)} on {mount}; {then}"


@contextlib.contextmanager
def no_room(folder: str | Path, what: str, need: Callable[[], int | None], then: str) -> Iterator[None]:
    """Turn a full disk inside the block (a write of any library, in any form: :func:`disk_full`) into a
    :class:`DiskFullError` whose one line (:func:`no_room_message`) names ``folder``, ``what`` was being written,
    roughly how many bytes it needs (``need()``) and ``then`` what to do; anything else passes unchanged."""
    try:
        yield
    except Exception as e:
        n = need()
        if not disk_full(e, folder, n):
            raise
        raise DiskFullError(no_room_message(folder, what, n, then)) from None


def disk_full_line(exc: BaseException, output: str | Path | None) -> str | None:
    """The one line for a full disk that no command has turned into its own message (the CLI's fallback): the file
    being written when the error names one, else the command's ``output``; None when ``exc`` is no full disk."""
    path = next((e.filename for e in _chain(exc) if isinstance(e, OSError) and isinstance(e.filename, (str, Path))),
                None)
    folder = Path(path).parent if path else Path(output) if output else None
    if not disk_full(exc, folder):
        return None
    what = re.sub(r"^\.(.+)\.tmp-\d+$|^(.+)\.tmp$", lambda m: m[1] or m[2], Path(path).name) if path else \
        "the command's output"  # the file, not its temporary name (temp_name)
    return no_room_message(folder or Path.cwd(), what, None, "free some space and run the command again")
