"""``difix-refiner demo``: the README's first command, baseline vs refiner on the bundled scene
(the engine is :mod:`difix_refiner.evaluation.demo`)."""

from __future__ import annotations

from dataclasses import dataclass

from difix_refiner.evaluation.demo import DemoConfig, run_demo


@dataclass
class DemoCommand(DemoConfig):
    __doc__ = DemoConfig.__doc__  # the subcommand's help

    def main(self) -> None:
        """Train, evaluate, print the table and write the report (bad input raises ``InputError``)."""
        run_demo(self)
