"""transferlab: the pre-train → transfer loop of representation models.

Curate data, pretrain encoders, evaluate downstream transfer, adapt to a task and predict what scale
will bring, one command per step and one run directory per experiment.
"""

__version__ = "0.1.0"


def load_model(ref: str, device: str = "auto"):
    """Any model reference (a run, `openclip:`, `hf:`, `timm:`, ...) with `encode_image` and `encode_text`;
    see transferlab.models.api. Imported on first use, so `import transferlab` stays light."""
    from transferlab.models.api import load_model as load

    return load(ref, device)
