"""`python -m streampack` runs the command line."""

from .cli import main

main()
