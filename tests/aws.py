"""moto's AWS server for tests of code that talks to AWS through aioboto3 (the moto decorator
does not reach aioboto3's HTTP client, a real server on a port does)."""

from __future__ import annotations

from collections.abc import Iterator

from moto.server import ThreadedMotoServer


def moto_server() -> Iterator[str]:
    """moto's server on a free port, its URL yielded until the generator is closed; a test
    module makes it a fixture with `yield from`."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
