"""bioimage.io model packages: read for prediction (:mod:`~bioim2im.formats.bioimageio.load`,
their files through :mod:`~bioim2im.formats.bioimageio.package`), the specification's
pre- and postprocessing on bioim2im arrays (:mod:`~bioim2im.formats.bioimageio.operations`),
and written by ``bioim2im export`` (:mod:`~bioim2im.formats.bioimageio.export`, with
:mod:`~bioim2im.formats.bioimageio.layout` and :mod:`~bioim2im.formats.bioimageio.documents`);
:mod:`~bioim2im.formats.bioimageio.calls` keeps bioimageio.spec and bioimageio.core quiet."""
