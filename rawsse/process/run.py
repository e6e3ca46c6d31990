"""Running rawsse as a program: one process, or a supervisor of worker processes."""

from __future__ import annotations

import logging

from rawsse.config import Config
from rawsse.process.single import serve
from rawsse.process.supervisor import Supervisor


def run(config: Config) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully. With `--workers` above
    one, this process becomes the supervisor of that many worker processes. Raises
    OSError when the port cannot be served (PortInUse when another server has it), and
    WorkersFailed when workers cannot be started."""
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if config.worker_count() > 1:
        Supervisor(config).run()
    else:
        serve(config)
