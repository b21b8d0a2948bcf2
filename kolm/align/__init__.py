"""Alignment after continual pretraining: LoRA instruction tuning (``kolm train sft``), preference tuning
(``kolm train dpo``) and merging adapters into standalone models (``kolm merge-lora``).

trl's SFTTrainer/DPOTrainer and peft's LoRA do the work; kolm validates the data up front, picks a chat template,
keeps adapters consistent with a resized (Korean-extended) vocabulary and records what it did.
"""
