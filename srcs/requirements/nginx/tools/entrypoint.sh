#!/bin/bash
# First start: a self-signed certificate for $DOMAIN_NAME (kept while the container
# lives). Every start: nginx.conf from its template, checked; then nginx as PID 1.
set -euo pipefail

: "${DOMAIN_NAME:?DOMAIN_NAME is not set}"
case "$DOMAIN_NAME" in
    *[!A-Za-z0-9.-]*) echo "DOMAIN_NAME '$DOMAIN_NAME' is not a host name" >&2; exit 1 ;;
esac

CERT=/etc/nginx/ssl/$DOMAIN_NAME.crt
KEY=/etc/nginx/ssl/$DOMAIN_NAME.key
if [ ! -s "$CERT" ] || [ ! -s "$KEY" ]; then
    echo "[nginx-entrypoint] generating a self-signed certificate for $DOMAIN_NAME"
    openssl req -x509 -nodes -newkey rsa:2048 -sha256 -days 365 \
        -keyout "$KEY" -out "$CERT" \
        -subj "/C=FR/O=42/CN=$DOMAIN_NAME" \
        -addext "subjectAltName=DNS:$DOMAIN_NAME" 2>/dev/null
    chmod 600 "$KEY"
fi

# Only ${DOMAIN_NAME} is substituted; nginx's own $variables stay as they are.
sed "s/\${DOMAIN_NAME}/$DOMAIN_NAME/g" /etc/nginx/nginx.conf.template > /etc/nginx/nginx.conf
nginx -t -q

exec "$@"
