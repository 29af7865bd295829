#!/bin/bash
# First start (empty data dir): create the system tables, set root's password from the
# secret, create the WordPress database and user. Then exec the server as PID 1.
set -euo pipefail

DATADIR=/var/lib/mysql
INIT_SOCKET=/run/mysqld/init.sock

log() { echo "[mariadb-entrypoint] $*"; }

secret() {
    local f="/run/secrets/$1"
    [ -s "$f" ] || { echo "secret $1 missing or empty ($f)" >&2; exit 1; }
    # First line only, without a trailing CR/LF.
    head -n1 "$f" | tr -d '\r\n'
}

# Escape a value for a single-quoted SQL string literal.
sql_escape() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e "s/'/\\\\'/g"; }

: "${MYSQL_DATABASE:?MYSQL_DATABASE is not set}"
: "${MYSQL_USER:?MYSQL_USER is not set}"

mkdir -p /run/mysqld
chown mysql:mysql /run/mysqld "$DATADIR"

if [ ! -d "$DATADIR/mysql" ]; then
    log "empty data directory: initialising"
    root_pw=$(sql_escape "$(secret db_root_password)")
    user_pw=$(sql_escape "$(secret db_password)")
    db=${MYSQL_DATABASE//\`/}
    user=$(sql_escape "$MYSQL_USER")

    mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
        --auth-root-authentication-method=socket >/dev/null

    # A temporary server without networking, on its own socket (the healthcheck uses the
    # default socket, so the service is not reported healthy before the real server runs).
    mariadbd --user=mysql --datadir="$DATADIR" --skip-networking --socket="$INIT_SOCKET" &
    pid=$!
    for _ in $(seq 60); do
        mariadb-admin --socket="$INIT_SOCKET" -uroot ping >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || { echo "temporary server died" >&2; exit 1; }
        sleep 1
    done

    mariadb --socket="$INIT_SOCKET" -uroot <<SQL
DELETE FROM mysql.global_priv WHERE User = '';
DELETE FROM mysql.global_priv WHERE User = 'root' AND Host <> 'localhost';
DELETE FROM mysql.proxies_priv WHERE Host <> 'localhost';
FLUSH PRIVILEGES;
ALTER USER 'root'@'localhost' IDENTIFIED VIA unix_socket OR mysql_native_password USING PASSWORD('${root_pw}');
CREATE DATABASE IF NOT EXISTS \`${db}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '${user}'@'%' IDENTIFIED BY '${user_pw}';
GRANT ALL PRIVILEGES ON \`${db}\`.* TO '${user}'@'%';
FLUSH PRIVILEGES;
SQL

    mariadb-admin --socket="$INIT_SOCKET" -uroot shutdown
    wait "$pid" || true
    log "initialised: database '${db}', user '${MYSQL_USER}'@'%', root on localhost only"
fi

exec "$@"
