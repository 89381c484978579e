"""The ``difix-refiner`` console script: one tyro subcommand per job.

Each subcommand is a dataclass in its own module of this package with a ``main()`` method that
parses nothing itself and calls a library engine; its docstring is the subcommand's help. Bad input
anywhere in the library raises :class:`~difix_refiner.core.errors.InputError`; this module alone turns
it into one line, ``difix-refiner <command>: error: <message>``, and exit status 1 (usage errors are
tyro's, status 2). Set ``DIFIX_REFINER_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Sequence

import tyro

from difix_refiner.core.errors import DEBUG_ENV, InputError


def subcommands() -> Dict[str, type]:
    """Subcommand name -> command dataclass."""
    from difix_refiner.commands.demo import DemoCommand
    from difix_refiner.commands.eval import EvalCommand
    from difix_refiner.commands.fix import FixCommand
    from difix_refiner.commands.import_pandaset import ImportPandasetCommand
    from difix_refiner.commands.make_pairs import MakePairsCommand, MergePairsCommand
    from difix_refiner.commands.render import (
        RenderRecordedCommand,
        RenderShiftedCommand,
    )
    from difix_refiner.commands.shift_path import ShiftPathCommand
    from difix_refiner.commands.train_fixer import TrainFixerCommand
    from difix_refiner.commands.weights import WeightsCommand

    return {
        "demo": DemoCommand,
        "shift-path": ShiftPathCommand,
        "render-shifted": RenderShiftedCommand,
        "render-recorded": RenderRecordedCommand,
        "fix": FixCommand,
        "make-pairs": MakePairsCommand,
        "merge-pairs": MergePairsCommand,
        "train-fixer": TrainFixerCommand,
        "eval": EvalCommand,
        "import-pandaset": ImportPandasetCommand,
        "weights": WeightsCommand,
    }


def run_command(name: str, command: Any) -> Any:
    """Run ``command.main()``; bad input exits with ``difix-refiner <name>: error: <message>`` (status 1)."""
    try:
        return command.main()
    except InputError as exc:
        if os.environ.get(DEBUG_ENV):
            raise
        raise SystemExit(f"difix-refiner {name}: error: {exc}") from None


def entrypoint(args: Optional[Sequence[str]] = None) -> None:
    """Parse the command line (``args``, default ``sys.argv``) and run the chosen subcommand."""
    import sys

    from difix_refiner.commands.help_width import run_fitted

    commands = subcommands()
    argv = list(sys.argv[1:] if args is None else args)
    command = run_fitted(
        lambda: tyro.extras.subcommand_cli_from_dict(
            commands,
            description="difix-refiner: shifted trajectories and a one-step diffusion fixer for driving scenes.",
            args=argv,
        ),
        argv,
    )
    name = next(n for n, cls in commands.items() if type(command) is cls)
    run_command(name, command)


if __name__ == "__main__":
    entrypoint()
