"""The one place where the scripts in training/ turn a user's mistake into one line and an exit code.

    if __name__ == "__main__":
        sys.exit(run_script(main))

A wrong path, option or record raises `ValueError` (`data.BadRecordError` is one) or `OSError`
(`FileNotFoundError`, `FileExistsError`, a model the Hub does not have); the user then reads
`sft.py: error: <message>` once, instead of the script's traceback with the launcher's below it.
Any other exception is a bug and keeps its traceback, as does every error under `--debug`.

Ctrl-C and SIGTERM (what a scheduler or `kill` sends) stop a run the same way: one line saying what a
rerun resumes from (`Stopped`, raised by `resume.resumable`), and the usual exit codes 130 and 143.
The interpreter then exits normally, so the run's temporary folders (the feature store) are removed.
"""

import os
import signal
import sys
import threading

from checks_flexmuse import user_error_line

EXPECTED = (ValueError, OSError)
USAGE_ERROR = 2  # argparse's code for a bad command line


class Stopped(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM; its message says what a rerun does."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is, as Ctrl-C raises KeyboardInterrupt."""


def _terminate(signum, frame):
    raise _Terminated()


def run_script(main, argv=None, prog=None) -> int:
    """Run `main(argv)` (default: the command line) and return the exit code. Under several
    processes only the first of each machine prints the message; all exit with the same code.
    `prog` names the command in the message (default: the script's file name)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _pop_debug(argv)
    prog = prog or os.path.basename(main.__code__.co_filename)
    # only the main thread may set a handler (and receives signals); called from another, SIGTERM keeps its own
    main_thread = threading.current_thread() is threading.main_thread()
    terminate = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        main(argv)
    except EXPECTED as err:
        if debug:
            raise
        _say(user_error_line(prog, err))
        return USAGE_ERROR
    except KeyboardInterrupt as stop:
        if debug:
            raise
        _say(f"{prog}: {stop}" if isinstance(stop, Stopped) else f"{prog}: stopped")
        return 128 + (signal.SIGTERM if isinstance(stop, _Terminated) or isinstance(stop.__context__, _Terminated)
                      else signal.SIGINT)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, terminate)
    return 0


def _say(line: str) -> None:
    """Print `line` to stderr, once per machine under several processes."""
    if os.environ.get("LOCAL_RANK", "0") == "0":
        print(line, file=sys.stderr)


def _pop_debug(argv: list) -> bool:
    """Remove a bare `--debug` from `argv`; TrainingArguments' `--debug OPTION` keeps its meaning."""
    for at, arg in enumerate(argv):
        if arg == "--debug" and (at + 1 == len(argv) or argv[at + 1].startswith("--")):
            del argv[at]
            return True
    return False


__all__ = ["Stopped", "run_script"]
