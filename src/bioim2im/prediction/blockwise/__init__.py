"""Out-of-core sliding-window prediction.

- :mod:`~bioim2im.prediction.blockwise.windows`: window positions and blending weights;
- :mod:`~bioim2im.prediction.blockwise.blocks`: the global window grid and its blocks;
- :mod:`~bioim2im.prediction.blockwise.runner`: block-wise prediction with prefetching and bounded memory;
- :mod:`~bioim2im.prediction.blockwise.stitch`: instance labels across blocks;
- :mod:`~bioim2im.prediction.blockwise.record`: finished blocks, for resuming an interrupted prediction.
"""

from __future__ import annotations

from bioim2im.prediction.blockwise.blocks import Block, BlockPlan, HeadGeometry, plan_blocks
from bioim2im.prediction.blockwise.record import BlockProgress, load_finished_blocks
from bioim2im.prediction.blockwise.runner import blocks_in_flight, predict_array, predict_blocks
from bioim2im.prediction.blockwise.stitch import label_blockwise, relabel_across_blocks
from bioim2im.prediction.blockwise.windows import gaussian_importance_map, window_starts

__all__ = [
    "Block",
    "BlockPlan",
    "BlockProgress",
    "HeadGeometry",
    "blocks_in_flight",
    "gaussian_importance_map",
    "label_blockwise",
    "load_finished_blocks",
    "plan_blocks",
    "predict_array",
    "predict_blocks",
    "relabel_across_blocks",
    "window_starts",
]
