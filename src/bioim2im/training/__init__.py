"""The training engine: plain torch, AMP, DDP under torchrun, exact resume."""
