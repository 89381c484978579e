"""Fit ``difix-refiner ... --help`` to the terminal width.

tyro draws its option boxes at the terminal's width but prints the usage line and the command's
description (the docstring, with its line breaks removed) unwrapped, so on an 80-column terminal
they ran off the edge. :func:`print_help_fitted` captures tyro's help and wraps those lines.
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import sys
import textwrap
from typing import Callable, List, TypeVar

T = TypeVar("T")

_BOX = ("│", "╭", "╰", "├", "┃", "┏", "┗")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def asks_for_help(argv: List[str]) -> bool:
    """Whether the command line asks for help (tyro prints it and exits)."""
    return any(a in ("-h", "--help") for a in argv)


def fit_lines(text: str, width: int) -> str:
    """Wrap every line wider than ``width`` that is not part of a drawn box; keep the rest as it is."""
    out: List[str] = []
    for line in text.split("\n"):
        plain = _ANSI.sub("", line)
        if len(plain) <= width or plain.lstrip().startswith(_BOX):
            out.append(line)
            continue
        indent = " " * (len(plain) - len(plain.lstrip()))
        follow = indent + ("    " if plain.lstrip().startswith("usage:") else "")
        # A choice list such as {demo,shift-path,...} longer than the line may break after its commas.
        words = [w.replace(",", ", ") if len(w) > width - len(follow) else w for w in plain.split()]
        out.extend(
            textwrap.wrap(
                " ".join(words),
                width=width,
                initial_indent=indent,
                subsequent_indent=follow,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(out)


def run_fitted(parse: Callable[[], T], argv: List[str]) -> T:
    """Call ``parse`` (a tyro CLI); when it prints help, re-print that help fitted to the terminal."""
    if not asks_for_help(argv):
        return parse()
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            result = parse()
    except SystemExit:
        sys.stdout.write(fit_lines(buffer.getvalue(), shutil.get_terminal_size().columns))
        sys.stdout.flush()
        raise
    sys.stdout.write(buffer.getvalue())
    return result
