"""`gentool` and `python -m gentool`: the process is made safe to run in before the commands,
and what they import, load: a Ctrl-C from here on is noted (see gentool.interrupts), and a
standard stream the shell closed is reopened on /dev/null."""

import sys

from gentool.interrupts import EXIT_INTERRUPTED, note_interrupts


def main() -> None:
    note_interrupts()
    from gentool.terminal import reopen_closed_standard_streams

    reopen_closed_standard_streams()
    try:
        from gentool.cli import run_commands
    except KeyboardInterrupt:
        sys.stderr.write("aborted\n")
        sys.exit(EXIT_INTERRUPTED)
    run_commands()


if __name__ == "__main__":
    main()
