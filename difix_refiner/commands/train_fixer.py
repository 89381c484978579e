"""``difix-refiner train-fixer``: train the fixer on pairs or on two unpaired image folders.

Also runnable as a module, e.g. under accelerate: ``accelerate launch -m difix_refiner.commands.train_fixer ...``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from difix_refiner.training.train_config import TrainFixerConfig


@dataclass
class TrainFixerCommand(TrainFixerConfig):
    __doc__ = TrainFixerConfig.__doc__

    def main(self) -> None:
        """Train (options and examples: :mod:`difix_refiner.training.train_config`)."""
        from difix_refiner.training.train_fixer import train_fixer

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        train_fixer(self)


if __name__ == "__main__":
    import tyro

    from difix_refiner.commands.cli import run_command

    run_command("train-fixer", tyro.cli(TrainFixerCommand))
