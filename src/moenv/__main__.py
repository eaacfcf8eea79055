"""`python -m moenv` runs the CLI."""

from moenv.cli.main import main

main()
