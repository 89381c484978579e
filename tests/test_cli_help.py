"""Every `difix-refiner` subcommand's --help fits an 80-column terminal."""

from __future__ import annotations

import sys

import pytest

from difix_refiner.commands.cli import entrypoint, subcommands
from difix_refiner.commands.help_width import fit_lines


def _help(args, capsys, monkeypatch) -> str:
    monkeypatch.setattr(sys, "argv", ["difix-refiner", *args, "--help"])
    with pytest.raises(SystemExit) as exc:
        entrypoint()
    assert exc.value.code in (0, None)
    return capsys.readouterr().out


def test_every_help_fits_80_columns(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    commands = [[]] + [[name] for name in subcommands()] + [["weights", "list"], ["weights", "fetch"]]
    for args in commands:
        text = _help(args, capsys, monkeypatch)
        assert text.startswith("usage: difix-refiner"), args
        long = [line for line in text.splitlines() if len(line) > 80]
        assert not long, f"{' '.join(args) or '(root)'}: {long[:3]}"
    # The description survives the wrapping (words are never cut).
    text = _help(["shift-path"], capsys, monkeypatch)
    assert "ns-render camera-path --load-config CONFIG" in " ".join(text.split())


def test_fit_lines_wraps_only_what_is_too_wide():
    boxed = "│ " + "x" * 100 + " │"
    text = "usage: difix-refiner [-h] {" + ",".join(["choice"] * 20) + "}\n\nshort line\n" + boxed
    lines = fit_lines(text, 40).splitlines()
    assert all(len(line) <= 40 for line in lines if not line.startswith("│"))
    assert lines[1].startswith("    ") and "short line" in lines and boxed in lines
    assert "".join(fit_lines(text, 40).split()).replace(",", "") == "".join(text.split()).replace(",", "")
