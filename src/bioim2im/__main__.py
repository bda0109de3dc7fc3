from bioim2im.cli import main

main()
