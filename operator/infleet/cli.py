"""The `infleet` command line: plan, crds, sandbox, run."""

from __future__ import annotations

import click

from infleet import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="infleet")
def main() -> None:
    """infleet places LLM inference fleets on heterogeneous accelerators."""


def _register_subcommands() -> None:
    # Sub-command groups live next to the code they drive; importing them here keeps
    # `infleet --help` fast for the commands that do not need heavy dependencies.
    from infleet.sandbox.cli import sandbox

    main.add_command(sandbox)


try:
    _register_subcommands()
except ImportError:  # pragma: no cover - only while a sub-package is being built
    pass
