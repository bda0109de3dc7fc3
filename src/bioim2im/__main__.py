from bioim2im.program import program

program()
