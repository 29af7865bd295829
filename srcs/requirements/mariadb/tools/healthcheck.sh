#!/bin/bash
# Healthy when the WordPress user can log in over TCP and use its database.
set -eu
MYSQL_PWD=$(head -n1 /run/secrets/db_password | tr -d '\r\n') \
    exec mariadb --protocol=tcp -h 127.0.0.1 -u "$MYSQL_USER" -e 'SELECT 1' "$MYSQL_DATABASE" >/dev/null
