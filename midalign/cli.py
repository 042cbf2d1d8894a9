"""How every script ends on a user error or an interrupt: one line, never a traceback."""

from __future__ import annotations

import sys
from typing import Callable

from midalign.errors import MidalignError


def run(main: Callable[[], None], errors: tuple[type[BaseException], ...] = ()) -> None:
    """Call a script's `main()`: a user error (MidalignError, or one of `errors`) ends with `error: …` and
    exit status 1; Ctrl-C with one line and status 130 (checkpoints already written stay, and `--resume`
    continues a training from the last one)."""
    try:
        main()
    except (MidalignError, *errors) as e:
        sys.exit(f"error: {e}")
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C); files written so far are complete", file=sys.stderr)
        sys.exit(130)
