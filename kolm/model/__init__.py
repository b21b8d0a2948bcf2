"""Model surgery for continual pretraining: resize embeddings and LM head to an extended tokenizer
(:mod:`kolm.model.resize`, ``kolm model resize``)."""
