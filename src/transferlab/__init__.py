"""transferlab: the pre-train → transfer loop of representation models.

Curate data, pretrain encoders, evaluate downstream transfer, adapt to a task and predict what scale
will bring, one command per step and one run directory per experiment.
"""

__version__ = "0.1.0"
