"""A `paretohqd serve` app in a background thread of this process, for tests and
benchmarks/bench_serve.py: `with Running(app) as port:` starts uvicorn on a free loopback port
and stops it on exit."""

from __future__ import annotations

import threading
import time


class Running:
    """uvicorn serving `app` on 127.0.0.1, port chosen by the system (see the module docstring)."""

    def __init__(self, app, host: str = "127.0.0.1"):
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, name="paretohqd-serve", daemon=True)

    def __enter__(self) -> int:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self.server.servers[0].sockets[0].getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
