"""``difix-refiner weights``: list the optional pretrained weights, and fetch them on request.

The registry (what each weight enables, where it is looked for) is
:mod:`difix_refiner.core.optional_weights`; downloading is :mod:`difix_refiner.core.weights_fetch`.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple, Union

import tyro
from typing_extensions import Annotated

from difix_refiner.core.errors import InputError

WIDTH = 80


def weight_rows() -> List[Dict[str, Any]]:
    """One dict per optional weight: name, what, enables, size, where, present, missing_modules."""
    from difix_refiner.core.optional_weights import registry

    return [
        {
            "name": w.name,
            "what": w.what,
            "enables": w.enables,
            "size": w.size,
            "where": w.where(),
            "present": w.present(),
            "missing_modules": w.missing_modules(),
            "fetchable": w.kind != "package",
        }
        for w in registry()
    ]


def _wrapped(label: str, text: str) -> str:
    return textwrap.fill(
        text, width=WIDTH, initial_indent=f"  {label}", subsequent_indent=" " * 4, break_long_words=False, break_on_hyphens=False
    )


def format_rows(rows: List[Dict[str, Any]]) -> str:
    """The listing printed by ``difix-refiner weights`` (lines fit 80 columns except long paths)."""
    out = [
        textwrap.fill(
            "Optional weights. Nothing is ever downloaded except by `difix-refiner weights fetch NAME...`; "
            "without a weight, what it enables is skipped with a message.",
            width=WIDTH,
        ),
        "",
    ]
    for row in rows:
        state = "present" if row["present"] else "MISSING"
        out.append(f"{row['name']}  [{state}]  {row['size']}")
        out.append(_wrapped("", row["what"]))
        out.append(_wrapped("enables: ", row["enables"]))
        out.append(_wrapped("looked for: ", row["where"]))
        if row["missing_modules"]:
            out.append(_wrapped("also needs: ", "the Python package(s) " + ", ".join(row["missing_modules"])))
        out.append("")
    missing = [r["name"] for r in rows if not r["present"] and r["fetchable"]]
    if missing:
        out.append(textwrap.fill(f"Fetch the missing ones with: difix-refiner weights fetch {' '.join(missing)}", WIDTH))
    return "\n".join(out).rstrip() + "\n"


@dataclass
class ListWeights:
    """List each optional weight: what it enables, where it is looked for, and
    whether it is there."""

    def main(self) -> None:
        print(format_rows(weight_rows()), end="")


@dataclass
class FetchWeights:
    """Download the named weights to where they are looked for (checked against
    their published checksums; a partial or wrong download is never kept)."""

    names: Annotated[
        Tuple[str, ...], tyro.conf.Positional, tyro.conf.arg(metavar="NAME...", help_behavior_hint="(one or more)")
    ]
    """Weights to fetch, e.g. lpips-alex vgg16 (names: see `difix-refiner weights`)."""

    def main(self) -> None:
        """Fetch the named weights (bad names and failed downloads raise ``InputError``)."""
        from difix_refiner.core.optional_weights import get_weight, weight_names
        from difix_refiner.core.weights_fetch import fetch

        if not self.names:
            raise InputError(f"name one or more weights to fetch ({', '.join(weight_names())})")
        unknown = [n for n in self.names if n not in weight_names()]
        if unknown:
            raise InputError(f"unknown weight(s) {', '.join(unknown)}; known: {', '.join(weight_names())}")
        for name in dict.fromkeys(self.names):
            print(f"{name}: ready at {fetch(get_weight(name))}")


@dataclass
class WeightsCommand:
    """List the optional pretrained weights (LPIPS, VGG16, CLIP, Inception,
    SD-Turbo): what each enables, where it is looked for, whether it is there.
    `weights fetch NAME...` downloads them; nothing is downloaded otherwise."""

    action: Union[
        Annotated[ListWeights, tyro.conf.subcommand("list", prefix_name=False)],
        Annotated[FetchWeights, tyro.conf.subcommand("fetch", prefix_name=False)],
    ] = field(default_factory=ListWeights)
    """list (default) or fetch."""

    def main(self) -> None:
        """Run the chosen action."""
        self.action.main()
