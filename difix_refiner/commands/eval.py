"""``difix-refiner eval``: evaluate one run (or two side by side) and write metrics.json and a contact sheet."""

from __future__ import annotations

from dataclasses import dataclass

from difix_refiner.evaluation.report import EvalConfig, evaluate_and_report


@dataclass
class EvalCommand(EvalConfig):
    __doc__ = EvalConfig.__doc__  # the subcommand's help

    def main(self) -> None:
        """Run the command (bad input raises ``InputError``; the console script prints it as one line)."""
        evaluate_and_report(self)
