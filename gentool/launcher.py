"""torchrun for `gentool train --nproc`, without torchrun's own report of a failure.

Each training process says in one line what stopped it (into the folder that
$GENTOOL_PROCESS_ERRORS names, for `gentool train` to show one of them); torchrun would add a
traceback of its own and a log line per process. A process killed by a signal says nothing
itself, so that is said here.

    python -m gentool.launcher TORCHRUN_ARGUMENTS...
"""

from __future__ import annotations

import logging
import os
import signal
import sys

PROCESS_ERRORS = "GENTOOL_PROCESS_ERRORS"


def main() -> int:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("torch.distributed"):  # its log of the failure it then raises
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        torchrun()
    except ChildFailedError as failed:
        said = os.environ.get(PROCESS_ERRORS)
        if said and any(os.scandir(said)):
            return 1  # a process said why; torchrun then stopped the others with SIGTERM
        for rank, failure in sorted(failed.failures.items()):
            if failure.exitcode < 0:
                killed_by = signal.Signals(-failure.exitcode).name
                print(f"error: training process {rank} was killed by {killed_by}", file=sys.stderr)
        return 1
    except SignalException:  # Ctrl-C or a kill: the processes saved and stopped
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
