"""bioim2im in napari: a reader for its predictions, images and run directories, and Predict,
Train and Evaluate widgets. Everything goes through bioim2im's public API (``bioim2im.api``
and ``bioim2im.io.open_image``/``write_image``)."""

__version__ = "0.1.0"
