#!/bin/bash
# Healthy when php-fpm answers its FastCGI ping (ping.path in the pool) on port 9000.
set -eu
out=$(SCRIPT_NAME=/ping SCRIPT_FILENAME=/ping REQUEST_METHOD=GET \
    cgi-fcgi -bind -connect 127.0.0.1:9000 2>/dev/null) || exit 1
grep -q pong <<<"$out"
