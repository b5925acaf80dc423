"""Fork relay workers with the serve supervisor.

``zcopy.server.supervisor.Supervisor`` already does everything a relay
needs (SO_REUSEPORT listeners, restart on crash, drain on SIGTERM, SIGKILL
stragglers), except that its ``_spawn`` starts the HTTP worker by name. This
subclass changes only which ``worker_main`` the child runs.
"""

from __future__ import annotations

import os
import signal
import sys

from zcopy.server.supervisor import Supervisor


class RelaySupervisor(Supervisor):
    def _spawn(self, slot: int) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, set())
                for i, s in enumerate(self.listeners):
                    if i != slot:
                        s.close()
                from zcopy.relay.worker import worker_main

                code = worker_main(self.config, self.listeners[slot], slot)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        self.pids[pid] = slot
