"""The ``difix-refiner`` console script: one tyro subcommand per job.

Each subcommand is a dataclass with a ``main()`` method that lives next to the code it drives (its
docstring is the subcommand's help); this module only collects them.
"""

from __future__ import annotations

from typing import Dict

import tyro


def subcommands() -> Dict[str, type]:
    """Subcommand name -> command dataclass."""
    from difix_refiner.cameras.render_command import RenderRecordedCommand, RenderShiftedCommand
    from difix_refiner.cameras.shift_command import ShiftPathCommand
    from difix_refiner.commands.weights import WeightsCommand
    from difix_refiner.demo import DemoCommand
    from difix_refiner.evaluation.eval_command import EvalCommand
    from difix_refiner.fixer.fix_command import FixCommand
    from difix_refiner.training.pairs_command import MakePairsCommand, MergePairsCommand
    from difix_refiner.training.train_command import TrainFixerCommand

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
        "weights": WeightsCommand,
    }


def entrypoint() -> None:
    """Parse the command line and run the chosen subcommand."""
    import sys

    from difix_refiner.commands.help_width import run_fitted

    command = run_fitted(
        lambda: tyro.extras.subcommand_cli_from_dict(
            subcommands(),
            description="difix-refiner: shifted trajectories and a one-step diffusion fixer for driving scenes.",
        ),
        sys.argv[1:],
    )
    command.main()


if __name__ == "__main__":
    entrypoint()
