from bioim2im.memory_pages import restart_with_huge_pages

restart_with_huge_pages()  # before the command line's imports: the process may start again

from bioim2im.cli import main  # noqa: E402

main()
