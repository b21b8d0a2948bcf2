"""Shared I/O of the stages, one module per subject; heavy libraries are imported inside the functions.

* :mod:`kolm.io.corpus`: reading corpora (``.txt``, ``.jsonl``, ``.parquet``) whole, in parts or as documents.
* :mod:`kolm.io.tokenizers`: the files of a tokenizer, copying them beside a model, content fingerprints.
* :mod:`kolm.io.models`: resolving a model folder or hub id; checking model folders, safetensors and Arrow data.
* :mod:`kolm.io.files`: reading JSON objects, hashing files, atomic writes of files and output folders, umask.
"""
