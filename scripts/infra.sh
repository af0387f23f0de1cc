#!/usr/bin/env bash
# Makes sure PostgreSQL and RabbitMQ run on 127.0.0.1 with the credentials Mailer uses by default
# (postgres/postgres, guest/guest): starts them if they are installed but stopped, installs them
# with apt when they are missing and we may, and otherwise says what to install. Also Debian's chromium,
# which the console walk-through drives, and promtool, which checks the alert rules.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432

say() { printf '[infra] %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

apt_install() {
  if ! command -v apt-get >/dev/null; then
    say "cannot install $* here (no apt-get): install it yourself and run again"; exit 1
  fi
  say "installing $* with apt"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

pg_up() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; }

ensure_postgres() {
  if command -v pg_isready >/dev/null && pg_up; then return; fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then apt_install postgresql; fi
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n1)
  say "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 60); do pg_up && break; sleep 0.5; done
  pg_up || { say "PostgreSQL did not come up on $PG_HOST:$PG_PORT"; exit 1; }
}

ensure_postgres_login() {
  # A fresh Debian cluster refuses passwordless TCP logins: give postgres the default password.
  if PGPASSWORD=postgres psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
    return
  fi
  say "setting the development password of the postgres role"
  as_root runuser -u postgres -- psql -q -c "ALTER ROLE postgres PASSWORD 'postgres'"
}

rabbit_up() { as_root rabbitmq-diagnostics -q ping >/dev/null 2>&1; }

ensure_rabbitmq() {
  if command -v rabbitmq-diagnostics >/dev/null && rabbit_up; then return; fi
  if ! command -v rabbitmq-server >/dev/null; then apt_install rabbitmq-server; fi
  say "starting RabbitMQ"
  as_root rabbitmq-server -detached || true
  as_root rabbitmqctl -q await_startup --timeout 120
}

ensure_browser() {
  # The console's walk-through drives Debian's chromium through Playwright (no browser download).
  if command -v chromium >/dev/null; then return; fi
  apt_install chromium
}

ensure_promtool() {
  # The alert rules are checked by Prometheus's own promtool. Only the binary is taken out of
  # Debian's package: installing the package would also start a Prometheus server.
  if command -v promtool >/dev/null || [ -x /usr/local/bin/promtool ]; then return; fi
  command -v apt-get >/dev/null || { say "promtool missing and no apt-get to fetch it"; exit 1; }
  say "fetching promtool from Debian's prometheus package"
  local dir
  dir=$(mktemp -d)
  (cd "$dir" && apt-get download -qq prometheus >/dev/null 2>&1 && dpkg-deb -x prometheus_*.deb root)
  as_root install -m 0755 "$dir/root/usr/bin/promtool" /usr/local/bin/promtool
  rm -rf "$dir"
}

ensure_postgres
ensure_postgres_login
ensure_rabbitmq
ensure_browser
ensure_promtool
say "PostgreSQL, RabbitMQ, chromium and promtool are ready"
