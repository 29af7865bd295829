#!/bin/bash
# Healthy when nginx completes a TLS handshake on 443 and answers its own status URL.
set -eu
exec curl -ksf -o /dev/null --max-time 4 \
    --resolve "${DOMAIN_NAME}:443:127.0.0.1" "https://${DOMAIN_NAME}/nginx-health"
