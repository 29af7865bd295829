#!/bin/bash
# Healthy when vsftpd greets a new control connection with "220".
set -eu
exec 3<>/dev/tcp/127.0.0.1/21
read -r -t 3 banner <&3
printf 'QUIT\r\n' >&3
case "$banner" in
    220*) exit 0 ;;
    *) exit 1 ;;
esac
