"""User-facing errors: one clear line on stderr, a non-zero exit, no traceback."""

import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake the user can fix (bad params, bad URL, corrupt archive): reported as one line."""


EXIT_USER_ERROR = 2


def run_stage(main: Callable[[], None]) -> int:
    """Run a stage's ``main`` and turn a ``UserError`` into one line on stderr and exit status 2."""
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
