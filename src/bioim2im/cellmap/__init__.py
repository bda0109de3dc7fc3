"""The CellMap segmentation challenge workflow: its data layout, class table, datasplit files,
test-crop manifest, scoring of a whole submission, and packing of the submission zip.

- :mod:`~bioim2im.cellmap.classes`: instance classes and which classes exclude each other;
- :mod:`~bioim2im.cellmap.datasplit`: the toolbox's ``datasplit.csv``, read and generated;
- :mod:`~bioim2im.cellmap.crops`: the annotated crops of a datasplit, opened for training;
- :mod:`~bioim2im.cellmap.manifest`: the test crops (``test_crop_manifest.csv``);
- :mod:`~bioim2im.cellmap.submission`: ``bioim2im pack``, writing and checking the zip;
- :mod:`~bioim2im.cellmap.evaluation`: ``bioim2im evaluate --task cellmap`` over a submission.

Training reads crops through :mod:`bioim2im.data.cellmap`, prediction writes the test crops
through :mod:`bioim2im.prediction.cellmap`; the per-crop scores follow
:mod:`bioim2im.metrics.cellmap`. The package knows formats, not models: it sits below the data
layer.
"""
