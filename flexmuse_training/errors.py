"""The one place where the scripts in training/ turn a user's mistake into one line and an exit code.

    if __name__ == "__main__":
        sys.exit(run_script(main))

A wrong path, option or record raises `ValueError` (`data.BadRecordError` is one) or `OSError`
(`FileNotFoundError`, `FileExistsError`, a model the Hub does not have); the user then reads
`sft.py: error: <message>` once, instead of the script's traceback with the launcher's below it.
Any other exception is a bug and keeps its traceback, as does every error under `--debug`.
"""

import os
import sys

from checks_flexmuse import user_error_line

EXPECTED = (ValueError, OSError)
USAGE_ERROR = 2  # argparse's code for a bad command line


def run_script(main, argv=None, prog=None) -> int:
    """Run `main(argv)` (default: the command line) and return the exit code. Under several
    processes only the first of each machine prints the message; all exit with the same code.
    `prog` names the command in the message (default: the script's file name)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _pop_debug(argv)
    try:
        main(argv)
    except EXPECTED as err:
        if debug:
            raise
        if os.environ.get("LOCAL_RANK", "0") == "0":
            print(user_error_line(prog or os.path.basename(main.__code__.co_filename), err), file=sys.stderr)
        return USAGE_ERROR
    return 0


def _pop_debug(argv: list) -> bool:
    """Remove a bare `--debug` from `argv`; TrainingArguments' `--debug OPTION` keeps its meaning."""
    for at, arg in enumerate(argv):
        if arg == "--debug" and (at + 1 == len(argv) or argv[at + 1].startswith("--")):
            del argv[at]
            return True
    return False


__all__ = ["run_script"]
