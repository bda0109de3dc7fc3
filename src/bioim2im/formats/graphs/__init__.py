"""TorchScript and ONNX graphs of a network: converted and checked against it
(:mod:`~bioim2im.formats.graphs.conversion`), run like it
(:mod:`~bioim2im.formats.graphs.runtimes`), read for prediction
(:mod:`~bioim2im.formats.graphs.load`; a TorchScript graph from elsewhere is checked by
:mod:`~bioim2im.formats.graphs.allowlist`) and written by ``bioim2im export``
(:mod:`~bioim2im.formats.graphs.export`)."""
