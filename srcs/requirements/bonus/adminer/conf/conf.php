<?php
/*
 * Adminer entry point (replaces Debian's /etc/adminer/conf.php): the same plugins, plus a
 * login form limited to the stack's MariaDB server, so Adminer cannot be pointed at other
 * hosts.
 */
define('ADMINER_DIR', '/usr/share/adminer');

function adminer_object() {
    include_once ADMINER_DIR . "/plugins/plugin.php";
    include_once ADMINER_DIR . "/plugins/version-noverify.php";
    include_once ADMINER_DIR . "/plugins/login-servers.php";

    $host = getenv('ADMINER_DB_HOST') ?: 'mariadb';
    $plugins = array(
        new AdminerVersionNoverify(), // no phoning home
        new AdminerLoginServers(array(
            "MariaDB ($host)" => array('server' => $host, 'driver' => 'server'),
        )),
    );
    return new AdminerPlugin($plugins);
}

include ADMINER_DIR . "/adminer.php";
