"""Errors the user can fix reach them as one sentence, from our commands and from ns-train alike."""

from __future__ import annotations

import subprocess
import sys

from difix_refiner.core.errors import InputError, one_line_message


def test_bad_input_and_refused_writes_are_one_sentence(tmp_path):
    assert one_line_message(InputError("--offsets contains 0")) == "--offsets contains 0"
    target = tmp_path / "ro" / "config.yml"
    refused = PermissionError(13, "Permission denied", str(target))
    message = one_line_message(refused)
    assert message.startswith(f"cannot write {target}: Permission denied") and "\n" not in message
    assert one_line_message(OSError(28, "No space left on device", "x.png")).startswith("cannot write x.png")
    assert one_line_message(ValueError("a bug")) is None  # programming errors keep their traceback
    assert one_line_message(FileNotFoundError(2, "No such file", "a")) is None


def test_ns_train_shows_an_unwritable_output_folder_in_one_line(tmp_path):
    """The hook method_configs installs, in a fresh interpreter, on the error nerfstudio raises first."""
    code = (
        "import difix_refiner.method_configs\n"
        f"raise PermissionError(13, 'Permission denied', {str(tmp_path / 'out' / 'config.yml')!r})\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr  # import-time library warnings may precede the sentence
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ns-train: error: cannot write {tmp_path / 'out' / 'config.yml'}: Permission denied")
