#!/bin/bash
# Creates the FTP user (sharing www-data's uid/gid so that WordPress and FTP can both
# write the files), sets its password from the secret, then execs vsftpd (tini's child).
set -euo pipefail

: "${FTP_USER:?FTP_USER is not set}"
SECRET=/run/secrets/ftp_password
[ -s "$SECRET" ] || { echo "secret ftp_password missing or empty" >&2; exit 1; }
case "$FTP_USER" in
    root|www-data|*[!a-z0-9_-]*) echo "FTP_USER '$FTP_USER' is not allowed" >&2; exit 1 ;;
esac

if ! id -u "$FTP_USER" >/dev/null 2>&1; then
    useradd --non-unique --uid "$(id -u www-data)" --gid www-data \
        --home-dir /var/www/html --no-create-home --shell /usr/sbin/nologin "$FTP_USER"
fi
# PAM's pam_shells wants the user's shell listed in /etc/shells.
grep -qx /usr/sbin/nologin /etc/shells || echo /usr/sbin/nologin >> /etc/shells
printf '%s:%s\n' "$FTP_USER" "$(head -n1 "$SECRET" | tr -d '\r\n')" | chpasswd
printf '%s\n' "$FTP_USER" > /etc/vsftpd.userlist

# Address advertised in PASV replies, when set (EPSV, which curl and lftp try first,
# carries no address). Given as an option: the config file may be mounted read-only.
if [ -n "${FTP_PASV_ADDRESS:-}" ]; then
    set -- "$@" "-opasv_address=$FTP_PASV_ADDRESS"
fi

mkdir -p /var/run/vsftpd/empty
exec "$@"
