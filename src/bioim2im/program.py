"""The ``bioim2im`` program (the console script and ``python -m bioim2im``): the command line
(:func:`bioim2im.cli.main`) in a process that may first start again with what the C library
needs to give tensors their memory fast (:mod:`bioim2im.memory_pages`). The restart comes
before the command line's imports, so it costs an interpreter's start and nothing more."""

from __future__ import annotations


def program() -> None:
    from bioim2im.memory_pages import restart_with_huge_pages

    restart_with_huge_pages()
    from bioim2im.cli import main

    main()
