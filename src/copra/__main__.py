from copra.cli import main

main()
