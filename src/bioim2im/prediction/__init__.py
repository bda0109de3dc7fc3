"""Prediction with a trained model: images of any size, block by block, resumable.

:mod:`~bioim2im.prediction.blockwise` is the preset-free library of out-of-core sliding-window
prediction; the other modules apply it to a trained model and image files.
"""
