"""kolm: Korean continual pretraining (vocabulary extension, data, CPT, SFT/DPO, evaluation) for open LLMs."""

__version__ = "0.1.0"
