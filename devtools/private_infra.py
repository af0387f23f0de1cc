"""A private PostgreSQL cluster and RabbitMQ node for fault tests, which stop and restart them.

The machine's shared servers (127.0.0.1:5432 and :5672) serve other engineers and CI at the same
time: a fault test must never restart those. These run from a temporary directory on free ports,
under their own names, and are torn down (processes killed, directory removed) on the way out of
`private_infra()`, whatever happened in between.

- PostgreSQL: `initdb` as the `postgres` user (the server refuses to run as root), trust auth on
  loopback, `pg_ctl start/stop/restart`.
- RabbitMQ: `rabbitmq-server` in the foreground as node `chaos-<id>@localhost`, with its own
  config file (the machine's pins the shared listener), no plugins, its own mnesia and log dirs;
  stopped with `rabbitmqctl -n <node> stop`, restarted by starting it again on the same data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN = Path(os.environ.get("CHAOS_PG_BIN", "/usr/lib/postgresql/15/bin"))
_PG_USER = "postgres"
_RABBIT_USER = "rabbitmq"


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _as_postgres(command: list[str]) -> list[str]:
    """Run as the postgres user when we are root (initdb and postgres refuse root)."""
    return ["runuser", "-u", _PG_USER, "--", *command] if os.geteuid() == 0 else command


@dataclass
class PrivatePostgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1:`port`, data in `directory`."""

    directory: Path
    port: int = field(default_factory=free_port)

    @property
    def url(self) -> str:
        """Admin URL (trust auth: no password)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"), "-w", "-t", "60", *args]
            ),
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def init(self) -> None:
        """Create the cluster."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.directory, _PG_USER)
        subprocess.run(
            _as_postgres(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.directory / "data"),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            "-c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._pg_ctl("-o", options, "-l", str(self.directory / "postgres.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast` disconnects clients and aborts their transactions)."""
        self._pg_ctl("-m", mode, "stop")

    def restart(self) -> None:
        """Stop and start again, as an operator's restart would."""
        self.stop()
        self.start()

    def running(self) -> bool:
        """Whether the server accepts TCP connections."""
        return _listening(self.port)

    def teardown(self) -> None:
        """Stop it (immediately) if it runs; never raises."""
        if (self.directory / "data" / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop("immediate")


@dataclass
class PrivateRabbit:
    """A throwaway RabbitMQ node `chaos-<id>@localhost` on 127.0.0.1:`port`."""

    directory: Path
    node: str = field(default_factory=lambda: f"chaos-{uuid.uuid4().hex[:8]}@localhost")
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """AMQP URL of the default vhost (guest may log in from loopback)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        config = self.directory / "rabbitmq.conf"
        if not config.exists():
            config.write_text(
                f"listeners.tcp.local = 127.0.0.1:{self.port}\n"
                "loopback_users.guest = true\n"
                # The disk alarm would block publishers on a busy CI disk; not what we test here.
                "disk_free_limit.absolute = 50MB\n"
            )
            (self.directory / "enabled_plugins").write_text("[].\n")
            (self.directory / "rabbitmq-env.conf").write_text("")
            for sub in ("mnesia", "log"):
                (self.directory / sub).mkdir(exist_ok=True)
            if os.geteuid() == 0:
                # Debian's rabbitmq-server, started as root, drops to the rabbitmq user.
                for path in (self.directory, *self.directory.rglob("*")):
                    with contextlib.suppress(LookupError, OSError):
                        shutil.chown(path, _RABBIT_USER, _RABBIT_USER)
        return {
            **os.environ,
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_CONF_ENV_FILE": str(self.directory / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.directory / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.directory / "log"),
            "RABBITMQ_PID_FILE": str(self.directory / "rabbit.pid"),
            "RABBITMQ_FEATURE_FLAGS_FILE": str(self.directory / "mnesia" / "feature_flags"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_CRASH_DUMP": str(self.directory / "erl_crash.dump"),
        }

    def start(self, timeout: float = 120.0) -> None:
        """Start the node (in the foreground, as our child) and wait until it has booted."""
        self.directory.mkdir(parents=True, exist_ok=True)
        env = self._env()
        log = (self.directory / "server.out").open("ab")
        self.process = subprocess.Popen(
            ["rabbitmq-server"],
            env=env,
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"rabbitmq node {self.node} exited: {(self.directory / 'server.out').read_text()[-2000:]}"
                )
            done = subprocess.run(
                ["rabbitmqctl", "-n", self.node, "-q", "await_startup", "--timeout", "5"],
                env=env,
                capture_output=True,
                timeout=30,
            )
            if done.returncode == 0 and _listening(self.port):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"rabbitmq node {self.node} not up after {timeout:.0f} s")
            time.sleep(0.5)

    def ctl(self, *args: str) -> None:
        """rabbitmqctl against this node."""
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, "-q", *args],
            env=self._env(),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def stop(self) -> None:
        """Stop the node gracefully and wait for its process."""
        self.ctl("stop")
        if self.process is not None:
            self.process.wait(timeout=60)

    def restart(self) -> None:
        """Stop it, then start it again on the same data."""
        self.stop()
        self.start()

    def teardown(self) -> None:
        """Stop it; kill its process group if that fails. Never raises."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(Exception):
            self.stop()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass
class PrivateInfra:
    """Both servers of one fault run."""

    postgres: PrivatePostgres
    rabbit: PrivateRabbit


@contextlib.contextmanager
def private_infra(keep: bool = False) -> Iterator[PrivateInfra]:
    """Start a private PostgreSQL and RabbitMQ; stop both and remove their files at the end."""
    root = Path(tempfile.mkdtemp(prefix="mailer-chaos-"))
    os.chmod(root, 0o755)
    postgres = PrivatePostgres(root / "pg")
    rabbit = PrivateRabbit(root / "rabbit")
    try:
        postgres.init()
        postgres.start()
        rabbit.start()
        yield PrivateInfra(postgres, rabbit)
    finally:
        rabbit.teardown()
        postgres.teardown()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
