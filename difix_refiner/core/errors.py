"""The one error type for bad user input.

Every library stage raises :class:`InputError` (or a subclass) when the user's files, options or
data are wrong; the message is one sentence that names the file or option and says how to fix it.
``difix_refiner.commands.cli`` turns it into ``error: <message>`` and exit code 1, in one place.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input; the message says what is wrong and how to fix it."""
