"""`python -m infleet`: the same as the `infleet` command."""

from infleet.cli import main

main()
