"""``difix-refiner fix``: run the fixer over a folder of images."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from difix_refiner.fixer.fix_folder import FixFolderConfig, fix_folder


@dataclass
class FixCommand(FixFolderConfig):
    """Fix a folder of renders with the one-step diffusion fixer (Difix3D+ / pix2pix-turbo)."""

    def main(self) -> None:
        """Fix the folder and print the counts."""
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        summary = fix_folder(self)
        print(f"fixed {summary['fixed']}, skipped {summary['skipped']} already done -> {self.output}", file=sys.stderr)
