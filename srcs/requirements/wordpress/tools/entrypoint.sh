#!/bin/bash
# First start: copy WordPress (Debian's package, unpacked at build time) into the volume,
# then wp-setup.php writes wp-config.php and installs the site. Then php-fpm runs as PID 1.
set -euo pipefail

WP_PATH=${WP_PATH:-/var/www/html}
export WP_PATH

if [ ! -e "$WP_PATH/wp-settings.php" ]; then
    echo "[wordpress-entrypoint] copying WordPress into $WP_PATH"
    cp -a /usr/src/wordpress/. "$WP_PATH/"
fi

# The Redis object-cache drop-in, always the image's version.
install -m 644 /usr/local/share/wordpress/object-cache.php "$WP_PATH/wp-content/object-cache.php"

php /usr/local/lib/wordpress/wp-setup.php

chown -R www-data:www-data "$WP_PATH"
mkdir -p /run/php

exec "$@"
