from grokrun.cli import main

main()
