#!/usr/bin/env bash
# Make this machine able to run Backchannel: the virtualenv with our dependencies, and
# MariaDB + Redis servers (installed if missing, started if not already answering).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "bootstrap: $*"; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 150); do port_open "$1" && return 0; sleep 0.2; done
  log "nothing listening on port $1 after 30s"; return 1
}

# --- python ----------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  log "creating .venv"
  python3 -m venv .venv
fi
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  log "installing python dependencies"
  .venv/bin/pip install -q --disable-pip-version-check -e '.[test]'
  rm -f .venv/.installed-*; touch "$stamp"
fi

# --- packages --------------------------------------------------------------------------
need=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need+=(mariadb-server)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin"

# --- mariadb ---------------------------------------------------------------------------
if ! port_open 3306; then
  log "starting mariadbd"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if [ ! -d /var/lib/mysql/mysql ]; then
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  setsid mariadbd --user=mysql --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
    --port=3306 --bind-address=127.0.0.1 --max-connections=1000 \
    >/tmp/backchannel-mariadb.log 2>&1 < /dev/null &
  wait_port 3306
fi
sql="CREATE USER IF NOT EXISTS 'backchannel'@'localhost' IDENTIFIED BY 'backchannel';
CREATE USER IF NOT EXISTS 'backchannel'@'127.0.0.1' IDENTIFIED BY 'backchannel';
GRANT ALL PRIVILEGES ON \`backchannel%\`.* TO 'backchannel'@'localhost';
GRANT ALL PRIVILEGES ON \`backchannel%\`.* TO 'backchannel'@'127.0.0.1';"
ready=0
for _ in $(seq 1 50); do
  if mariadb -uroot -e "$sql" 2>/dev/null; then ready=1; break; fi
  # a server we did not start may not let root in over the socket: fine if our user works
  if mariadb -h127.0.0.1 -ubackchannel -pbackchannel -e "SELECT 1" >/dev/null 2>&1; then
    ready=1; break
  fi
  sleep 0.2
done
[ "$ready" = 1 ] || { log "cannot create or use the backchannel SQL user"; exit 1; }

# --- redis -----------------------------------------------------------------------------
if ! port_open 6379; then
  log "starting redis-server"
  redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no \
    --logfile /tmp/backchannel-redis.log
  wait_port 6379
fi
log "ready"
