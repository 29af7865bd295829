<?php
/*
 * First-start installer for WordPress, run by the entrypoint before php-fpm starts.
 * Debian packages no WordPress CLI and nothing may be downloaded, so this does what
 * `wp core install` would: write wp-config.php from the environment and the docker
 * secrets, wait for MariaDB, run wp_install() with the administrator, add the second
 * user and publish a first post. Every step is skipped when already done.
 */

function fail( $msg ) {
	fwrite( STDERR, "[wp-setup] error: $msg\n" );
	exit( 1 );
}

function say( $msg ) {
	echo "[wp-setup] $msg\n";
}

function env( $name, $default = null ) {
	$value = getenv( $name );
	if ( false === $value || '' === $value ) {
		if ( null === $default ) {
			fail( "environment variable $name is not set" );
		}
		return $default;
	}
	return $value;
}

function secret( $name ) {
	$file = "/run/secrets/$name";
	if ( ! is_readable( $file ) ) {
		fail( "secret $name is missing ($file)" );
	}
	$lines = file( $file, FILE_IGNORE_NEW_LINES );
	$value = rtrim( (string) ( $lines[0] ?? '' ), "\r\n" );
	if ( '' === $value ) {
		fail( "secret $name is empty" );
	}
	return $value;
}

/*
 * The settings live in one array: WordPress keeps state in global variables (for example
 * setup_userdata() overwrites $user_email), so this script defines none of its own.
 */
$GLOBALS['inception_setup'] = array(
	'wp_path'     => rtrim( env( 'WP_PATH', '/var/www/html' ), '/' ),
	'domain'      => env( 'DOMAIN_NAME' ),
	'db_name'     => env( 'MYSQL_DATABASE' ),
	'db_user'     => env( 'MYSQL_USER' ),
	'db_host'     => env( 'MYSQL_HOST', 'mariadb' ),
	'redis_host'  => env( 'REDIS_HOST', 'redis' ),
	'redis_port'  => (int) env( 'REDIS_PORT', '6379' ),
	'title'       => env( 'WP_TITLE' ),
	'tagline'     => env( 'WP_TAGLINE', '' ),
	'admin_user'  => env( 'WP_ADMIN_USER' ),
	'admin_email' => env( 'WP_ADMIN_EMAIL' ),
	'user_name'   => env( 'WP_USER' ),
	'user_email'  => env( 'WP_USER_EMAIL' ),
	'user_role'   => env( 'WP_USER_ROLE', 'author' ),
	'timezone'    => env( 'WP_TIMEZONE', 'Europe/Paris' ),
);
$GLOBALS['inception_setup']['url'] = 'https://' . $GLOBALS['inception_setup']['domain'];

function check_settings( array $c ) {
	if ( preg_match( '/admin/i', $c['admin_user'] ) ) {
		fail( "the administrator's login ('{$c['admin_user']}') must not contain 'admin'" );
	}
	if ( strcasecmp( $c['admin_user'], $c['user_name'] ) === 0 ) {
		fail( 'WP_ADMIN_USER and WP_USER must differ' );
	}
	if ( strcasecmp( $c['admin_email'], $c['user_email'] ) === 0 ) {
		fail( 'WP_ADMIN_EMAIL and WP_USER_EMAIL must differ' );
	}
	if ( ! in_array( $c['user_role'], array( 'author', 'editor', 'contributor', 'subscriber' ), true ) ) {
		fail( "WP_USER_ROLE must be author, editor, contributor or subscriber, not '{$c['user_role']}'" );
	}
}

/* 1. wp-config.php, from the environment and the db_password secret. */
function write_config( array $c ) {
	$config = $c['wp_path'] . '/wp-config.php';
	if ( file_exists( $config ) ) {
		return;
	}
	$define = function ( $name, $value ) {
		return sprintf( "define( %s, %s );\n", var_export( $name, true ), var_export( $value, true ) );
	};
	$php  = "<?php\n";
	$php .= "/* Written at first start by wp-setup.php from the environment and the docker secrets. */\n\n";
	$php .= $define( 'DB_NAME', $c['db_name'] );
	$php .= $define( 'DB_USER', $c['db_user'] );
	$php .= $define( 'DB_PASSWORD', secret( 'db_password' ) );
	$php .= $define( 'DB_HOST', $c['db_host'] );
	$php .= $define( 'DB_CHARSET', 'utf8mb4' );
	$php .= $define( 'DB_COLLATE', '' );
	$php .= "\n";
	foreach ( array( 'AUTH_KEY', 'SECURE_AUTH_KEY', 'LOGGED_IN_KEY', 'NONCE_KEY', 'AUTH_SALT', 'SECURE_AUTH_SALT', 'LOGGED_IN_SALT', 'NONCE_SALT' ) as $key ) {
		$php .= $define( $key, bin2hex( random_bytes( 32 ) ) );
	}
	$php .= "\n\$table_prefix = 'wp_';\n\n";
	$php .= $define( 'WP_HOME', $c['url'] );
	$php .= $define( 'WP_SITEURL', $c['url'] );
	$php .= "\n/* Object cache in Redis: wp-content/object-cache.php reads these. */\n";
	$php .= $define( 'WP_REDIS_HOST', $c['redis_host'] );
	$php .= $define( 'WP_REDIS_PORT', $c['redis_port'] );
	$php .= $define( 'WP_REDIS_DATABASE', 0 );
	$php .= $define( 'WP_REDIS_TIMEOUT', 1.0 );
	$php .= $define( 'WP_CACHE_KEY_SALT', $c['domain'] . ':' );
	$php .= "\n/* Updates come from Debian's package, not from the network. */\n";
	$php .= $define( 'AUTOMATIC_UPDATER_DISABLED', true );
	$php .= $define( 'WP_AUTO_UPDATE_CORE', false );
	$php .= $define( 'WP_DEBUG', false );
	$php .= "\n/* TLS ends at nginx, which passes HTTPS=on over FastCGI. */\n";
	$php .= "if ( isset( \$_SERVER['HTTP_X_FORWARDED_PROTO'] ) && 'https' === \$_SERVER['HTTP_X_FORWARDED_PROTO'] ) {\n\t\$_SERVER['HTTPS'] = 'on';\n}\n\n";
	$php .= "if ( ! defined( 'ABSPATH' ) ) {\n\tdefine( 'ABSPATH', __DIR__ . '/' );\n}\n";
	$php .= "require_once ABSPATH . 'wp-settings.php';\n";
	if ( false === file_put_contents( $config, $php ) ) {
		fail( "cannot write $config" );
	}
	chmod( $config, 0640 );
	say( "wrote $config" );
}

/* 2. Wait for MariaDB (compose also waits for its healthcheck). */
function wait_for_db( array $c ) {
	mysqli_report( MYSQLI_REPORT_OFF );
	$password = secret( 'db_password' );
	for ( $try = 1; ; $try++ ) {
		$link = @mysqli_connect( $c['db_host'], $c['db_user'], $password, $c['db_name'] );
		if ( $link ) {
			mysqli_close( $link );
			return;
		}
		if ( $try >= 60 ) {
			fail( "MariaDB at {$c['db_host']} is not reachable: " . mysqli_connect_error() );
		}
		say( "waiting for MariaDB at {$c['db_host']} ($try)" );
		sleep( 2 );
	}
}

/* 4. wp_install(), the site's settings and the first post. */
function install_site( array $c ) {
	global $wp_rewrite;

	if ( is_blog_installed() ) {
		say( 'WordPress is already installed' );
		return;
	}
	wp_cache_flush();
	$result = wp_install( $c['title'], $c['admin_user'], $c['admin_email'], true, '', secret( 'wp_admin_password' ) );
	if ( empty( $result['user_id'] ) ) {
		fail( 'wp_install() did not create the administrator' );
	}
	$admin_id = (int) $result['user_id'];
	update_option( 'siteurl', $c['url'] );
	update_option( 'home', $c['url'] );
	update_option( 'blogdescription', $c['tagline'] );
	update_option( 'timezone_string', $c['timezone'] );
	$wp_rewrite->set_permalink_structure( '/%postname%/' );
	$wp_rewrite->flush_rules( false );
	say( "installed WordPress '{$c['title']}' at {$c['url']}, administrator '{$c['admin_user']}'" );

	$previous = get_current_user_id();
	wp_set_current_user( $admin_id );
	$post_id = wp_insert_post(
		array(
			'post_title'   => 'Welcome to Inception',
			'post_content' => "<!-- wp:paragraph -->\n<p>This post was written at the first start of the stack. It lives in MariaDB, is served by php-fpm behind nginx over TLS, and WordPress' object cache keeps it in Redis.</p>\n<!-- /wp:paragraph -->",
			'post_status'  => 'publish',
			'post_author'  => $admin_id,
		),
		true
	);
	wp_set_current_user( $previous );
	if ( is_wp_error( $post_id ) ) {
		fail( 'cannot create the first post: ' . $post_id->get_error_message() );
	}
	say( "published the first post (ID $post_id)" );
}

/* 5. The second user (created again if it was deleted while the site was installed). */
function ensure_second_user( array $c ) {
	if ( username_exists( $c['user_name'] ) ) {
		return;
	}
	$uid = wp_insert_user(
		array(
			'user_login'   => $c['user_name'],
			'user_pass'    => secret( 'wp_user_password' ),
			'user_email'   => $c['user_email'],
			'display_name' => $c['user_name'],
			'role'         => $c['user_role'],
		)
	);
	if ( is_wp_error( $uid ) ) {
		fail( "cannot create user '{$c['user_name']}': " . $uid->get_error_message() );
	}
	say( "created the {$c['user_role']} '{$c['user_name']}' (ID $uid)" );
}

check_settings( $GLOBALS['inception_setup'] );
write_config( $GLOBALS['inception_setup'] );
wait_for_db( $GLOBALS['inception_setup'] );

/* 3. Load WordPress the way wp-admin/install.php does (at global scope, as it expects). */
define( 'WP_INSTALLING', true );
$_SERVER['HTTP_HOST']   = $GLOBALS['inception_setup']['domain'];
$_SERVER['SERVER_NAME'] = $GLOBALS['inception_setup']['domain'];
$_SERVER['HTTPS']       = 'on';
$_SERVER['REQUEST_URI'] = '/';
require $GLOBALS['inception_setup']['wp_path'] . '/wp-load.php';

if ( ! function_exists( 'wp_new_blog_notification' ) ) {
	/* No mail transport in the container: skip the "new site" e-mail (pluggable). */
	function wp_new_blog_notification( $blog_title, $blog_url, $user_id, $password ) {
	}
}
require_once ABSPATH . 'wp-admin/includes/upgrade.php';
require_once ABSPATH . 'wp-admin/includes/user.php';

install_site( $GLOBALS['inception_setup'] );
ensure_second_user( $GLOBALS['inception_setup'] );
exit( 0 );
