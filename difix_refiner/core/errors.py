"""The one error type for bad user input.

Every library stage raises :class:`InputError` (or a subclass) when the user's files, options or
data are wrong; the message is one sentence that names the file or option and says how to fix it.
``difix_refiner.commands.cli`` turns it into ``error: <message>`` and exit code 1, in one place.
"""

from __future__ import annotations


class InputError(ValueError):
    """Bad input; the message says what is wrong and how to fix it."""


DEBUG_ENV = "DIFIX_REFINER_DEBUG"
"""Environment variable that makes bad-input errors show their traceback."""


def one_line_message(error: BaseException) -> "str | None":
    """The sentence for an error the user can fix: bad input, or a file that cannot be written (an
    unwritable or full output folder, e.g. when nerfstudio writes the run's config.yml); None otherwise."""
    import errno

    if isinstance(error, InputError):
        return str(error)
    faults = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}
    if isinstance(error, OSError) and error.errno in faults and error.filename:
        return f"cannot write {error.filename}: {error.strerror}; choose another output folder or free space there"
    return None


def install_one_line_errors(program: str) -> None:
    """Show an uncaught :class:`InputError` (or a write that the disk or folder refused) as
    ``<program>: error: <message>`` and exit status 1.

    For programs whose entry point is not ours (``ns-train`` loading this plugin): the sentence, not a
    40-line traceback. Other exceptions, and every exception with ``DIFIX_REFINER_DEBUG=1``, keep the
    hook that was installed before.
    """
    import os
    import sys

    previous = sys.excepthook
    if getattr(previous, "_difix_refiner", False):
        return

    def hook(kind, value, traceback):
        message = one_line_message(value)
        if message is not None and not os.environ.get(DEBUG_ENV):
            print(f"{program}: error: {message} (set {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
            sys.exit(1)
        previous(kind, value, traceback)

    hook._difix_refiner = True  # type: ignore[attr-defined]
    sys.excepthook = hook
