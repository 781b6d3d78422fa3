"""`python -m ceptoar` runs the command line."""

from ceptoar.cli.main import main

main()
