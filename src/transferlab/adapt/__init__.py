"""Adapting a pretrained model to a downstream task: training-free heads on cached features (GDA,
Tip-Adapter), prompt learning (CoOp), fine-tuning (full, LoRA) and weight-space methods (WiSE-FT, task
arithmetic, TIES, soups)."""
