"""bioim2im-cellmap: the CellMap segmentation challenge's workflow as a bioim2im plugin.

Registered through :mod:`bioim2im_cellmap.hooks` (the ``bioim2im`` entry point):

- the ``cellmap`` data layout (:mod:`~bioim2im_cellmap.layout`): a datasplit CSV of crops,
  trained from patches drawn in physical space (:mod:`~bioim2im_cellmap.patches`);
- the ``cellmap-2d`` and ``cellmap-3d`` presets;
- the ``cellmap`` evaluation task and the ``bioim2im cellmap`` commands
  (:mod:`~bioim2im_cellmap.api`, :mod:`~bioim2im_cellmap.cli`).

The formats and their engines:

- :mod:`~bioim2im_cellmap.classes`: instance classes and which classes exclude each other;
- :mod:`~bioim2im_cellmap.datasplit`: the toolbox's ``datasplit.csv``, read and generated;
- :mod:`~bioim2im_cellmap.crops`: the annotated crops of a datasplit, opened for training;
- :mod:`~bioim2im_cellmap.manifest`: the test crops (``test_crop_manifest.csv``);
- :mod:`~bioim2im_cellmap.prediction`: the test crops predicted in the challenge's layout;
- :mod:`~bioim2im_cellmap.submission`: ``bioim2im cellmap pack``, writing and checking the zip;
- :mod:`~bioim2im_cellmap.evaluation`: ``bioim2im cellmap evaluate`` over a submission, or one
  class of single files;
- :mod:`~bioim2im_cellmap.metrics`: the challenge's per-crop counts and scores;
- :mod:`~bioim2im_cellmap.grids`: crops' grids, and arrays brought onto them.

This module and :mod:`~bioim2im_cellmap.hooks` stay light: importing them imports no heavy
library.
"""
