<?php
/**
 * Object cache drop-in: WordPress' object cache stored in Redis through the php-redis
 * extension (Debian's php8.2-redis). Debian packages no Redis plugin for WordPress, so this
 * file is the whole integration: WordPress loads wp-content/object-cache.php at start-up
 * and then reports wp_using_ext_object_cache() === true.
 *
 * Settings (wp-config.php): WP_REDIS_HOST, WP_REDIS_PORT, WP_REDIS_DATABASE,
 * WP_REDIS_TIMEOUT, WP_REDIS_PASSWORD, WP_CACHE_KEY_SALT.
 * If Redis is unreachable, the cache degrades to a per-request memory cache.
 */

defined( 'ABSPATH' ) || exit;

class WP_Object_Cache {
	/** Per-request copy: [group][id] => value. */
	public $cache = array();
	public $cache_hits = 0;
	public $cache_misses = 0;
	public $redis_calls = 0;

	protected $global_groups = array();
	protected $non_persistent_groups = array();
	protected $blog_prefix = '';
	protected $multisite = false;
	protected $salt = '';
	/** @var Redis|null */
	protected $redis = null;
	protected $redis_error = '';

	public function __construct() {
		$this->multisite   = function_exists( 'is_multisite' ) && is_multisite();
		$this->blog_prefix = $this->multisite ? get_current_blog_id() . ':' : '';
		$this->salt        = defined( 'WP_CACHE_KEY_SALT' ) ? (string) WP_CACHE_KEY_SALT : '';
		$this->connect();
	}

	protected function connect() {
		if ( ! class_exists( 'Redis' ) ) {
			$this->redis_error = 'the php-redis extension is not loaded';
			return;
		}
		$host    = defined( 'WP_REDIS_HOST' ) ? WP_REDIS_HOST : '127.0.0.1';
		$port    = defined( 'WP_REDIS_PORT' ) ? (int) WP_REDIS_PORT : 6379;
		$timeout = defined( 'WP_REDIS_TIMEOUT' ) ? (float) WP_REDIS_TIMEOUT : 1.0;
		try {
			$redis = new Redis();
			if ( ! $redis->connect( $host, $port, $timeout, null, 0, $timeout ) ) {
				throw new RedisException( "cannot connect to $host:$port" );
			}
			if ( defined( 'WP_REDIS_PASSWORD' ) && WP_REDIS_PASSWORD !== '' ) {
				$redis->auth( WP_REDIS_PASSWORD );
			}
			if ( defined( 'WP_REDIS_DATABASE' ) ) {
				$redis->select( (int) WP_REDIS_DATABASE );
			}
			$this->redis = $redis;
		} catch ( Exception $e ) {
			$this->redis       = null;
			$this->redis_error = $e->getMessage();
		}
	}

	/** One Redis command; on a connection error the cache goes on in memory only. */
	protected function call( $method, ...$args ) {
		if ( ! $this->redis ) {
			return false;
		}
		try {
			$this->redis_calls++;
			return $this->redis->$method( ...$args );
		} catch ( Exception $e ) {
			$this->redis_error = $e->getMessage();
			$this->redis       = null;
			return false;
		}
	}

	/** True when Redis answers PING. */
	public function redis_status() {
		$pong = $this->call( 'ping' );
		return true === $pong || ( is_string( $pong ) && false !== stripos( $pong, 'PONG' ) );
	}

	public function redis_error() {
		return $this->redis_error;
	}

	/** @return Redis|null */
	public function redis_instance() {
		return $this->redis;
	}

	protected function group( $group ) {
		return ( '' === $group || null === $group ) ? 'default' : (string) $group;
	}

	protected function id( $key, $group ) {
		return isset( $this->global_groups[ $group ] ) ? (string) $key : $this->blog_prefix . $key;
	}

	protected function redis_key( $id, $group ) {
		return $this->salt . $group . ':' . $id;
	}

	protected function persistent( $group ) {
		return null !== $this->redis && ! isset( $this->non_persistent_groups[ $group ] );
	}

	protected function valid_key( $key ) {
		return is_int( $key ) || ( is_string( $key ) && '' !== trim( $key ) );
	}

	public function get( $key, $group = 'default', $force = false, &$found = null ) {
		$group = $this->group( $group );
		if ( ! $this->valid_key( $key ) ) {
			$found = false;
			return false;
		}
		$id = $this->id( $key, $group );
		if ( ! $force && isset( $this->cache[ $group ] ) && array_key_exists( $id, $this->cache[ $group ] ) ) {
			$found = true;
			$this->cache_hits++;
			$value = $this->cache[ $group ][ $id ];
			return is_object( $value ) ? clone $value : $value;
		}
		if ( $this->persistent( $group ) ) {
			$raw = $this->call( 'get', $this->redis_key( $id, $group ) );
			if ( is_string( $raw ) ) {
				$value                       = unserialize( $raw );
				$this->cache[ $group ][ $id ] = $value;
				$found                       = true;
				$this->cache_hits++;
				return is_object( $value ) ? clone $value : $value;
			}
		}
		$found = false;
		$this->cache_misses++;
		return false;
	}

	public function get_multiple( $keys, $group = 'default', $force = false ) {
		$values = array();
		foreach ( $keys as $key ) {
			$values[ $key ] = $this->get( $key, $group, $force );
		}
		return $values;
	}

	public function set( $key, $data, $group = 'default', $expire = 0 ) {
		$group = $this->group( $group );
		if ( ! $this->valid_key( $key ) ) {
			return false;
		}
		$id = $this->id( $key, $group );
		if ( is_object( $data ) ) {
			$data = clone $data;
		}
		$this->cache[ $group ][ $id ] = $data;
		if ( $this->persistent( $group ) ) {
			$raw    = serialize( $data );
			$expire = (int) $expire;
			$rkey   = $this->redis_key( $id, $group );
			$expire > 0 ? $this->call( 'setex', $rkey, $expire, $raw ) : $this->call( 'set', $rkey, $raw );
		}
		return true;
	}

	public function set_multiple( array $data, $group = 'default', $expire = 0 ) {
		$values = array();
		foreach ( $data as $key => $value ) {
			$values[ $key ] = $this->set( $key, $value, $group, $expire );
		}
		return $values;
	}

	protected function exists( $key, $group ) {
		$found = false;
		$this->get( $key, $group, false, $found );
		return $found;
	}

	public function add( $key, $data, $group = 'default', $expire = 0 ) {
		if ( function_exists( 'wp_suspend_cache_addition' ) && wp_suspend_cache_addition() ) {
			return false;
		}
		if ( ! $this->valid_key( $key ) || $this->exists( $key, $group ) ) {
			return false;
		}
		return $this->set( $key, $data, $group, $expire );
	}

	public function add_multiple( array $data, $group = '', $expire = 0 ) {
		$values = array();
		foreach ( $data as $key => $value ) {
			$values[ $key ] = $this->add( $key, $value, $group, $expire );
		}
		return $values;
	}

	public function replace( $key, $data, $group = 'default', $expire = 0 ) {
		if ( ! $this->valid_key( $key ) || ! $this->exists( $key, $group ) ) {
			return false;
		}
		return $this->set( $key, $data, $group, $expire );
	}

	public function delete( $key, $group = 'default', $deprecated = false ) {
		$group = $this->group( $group );
		if ( ! $this->valid_key( $key ) ) {
			return false;
		}
		$id      = $this->id( $key, $group );
		$existed = isset( $this->cache[ $group ] ) && array_key_exists( $id, $this->cache[ $group ] );
		unset( $this->cache[ $group ][ $id ] );
		if ( $this->persistent( $group ) ) {
			$existed = ( (int) $this->call( 'del', $this->redis_key( $id, $group ) ) > 0 ) || $existed;
		}
		return $existed;
	}

	public function delete_multiple( array $keys, $group = '' ) {
		$values = array();
		foreach ( $keys as $key ) {
			$values[ $key ] = $this->delete( $key, $group );
		}
		return $values;
	}

	public function incr( $key, $offset = 1, $group = 'default' ) {
		$found = false;
		$value = $this->get( $key, $group, false, $found );
		if ( ! $found ) {
			return false;
		}
		$value = ( is_numeric( $value ) ? (int) $value : 0 ) + (int) $offset;
		$value = max( 0, $value );
		$this->set( $key, $value, $group );
		return $value;
	}

	public function decr( $key, $offset = 1, $group = 'default' ) {
		return $this->incr( $key, -(int) $offset, $group );
	}

	/** Empties this site's keys in Redis (those under WP_CACHE_KEY_SALT) and the memory copy. */
	public function flush() {
		$this->cache = array();
		if ( null !== $this->redis ) {
			if ( '' === $this->salt ) {
				return (bool) $this->call( 'flushDb' );
			}
			$keys = $this->call( 'keys', $this->salt . '*' );
			if ( is_array( $keys ) && $keys ) {
				foreach ( array_chunk( $keys, 500 ) as $chunk ) {
					$this->call( 'del', $chunk );
				}
			}
		}
		return true;
	}

	public function flush_runtime() {
		$this->cache = array();
		return true;
	}

	public function flush_group( $group ) {
		$group = $this->group( $group );
		unset( $this->cache[ $group ] );
		if ( null !== $this->redis ) {
			$keys = $this->call( 'keys', $this->salt . $group . ':*' );
			if ( is_array( $keys ) && $keys ) {
				$this->call( 'del', $keys );
			}
		}
		return true;
	}

	public function add_global_groups( $groups ) {
		foreach ( (array) $groups as $group ) {
			$this->global_groups[ $group ] = true;
		}
	}

	public function add_non_persistent_groups( $groups ) {
		foreach ( (array) $groups as $group ) {
			$this->non_persistent_groups[ $group ] = true;
		}
	}

	public function switch_to_blog( $blog_id ) {
		$this->blog_prefix = $this->multisite ? (int) $blog_id . ':' : '';
	}

	public function close() {
		if ( null !== $this->redis ) {
			$this->call( 'close' );
		}
		return true;
	}

	public function stats() {
		printf(
			'<p><strong>Cache hits:</strong> %d<br /><strong>Cache misses:</strong> %d<br /><strong>Redis:</strong> %s (%d calls)</p>',
			$this->cache_hits,
			$this->cache_misses,
			null !== $this->redis ? 'connected' : 'not connected ' . esc_html( $this->redis_error ),
			$this->redis_calls
		);
	}
}

function wp_cache_init() {
	$GLOBALS['wp_object_cache'] = new WP_Object_Cache();
}

function wp_cache_add( $key, $data, $group = '', $expire = 0 ) {
	global $wp_object_cache;
	return $wp_object_cache->add( $key, $data, $group, (int) $expire );
}

function wp_cache_add_multiple( array $data, $group = '', $expire = 0 ) {
	global $wp_object_cache;
	return $wp_object_cache->add_multiple( $data, $group, (int) $expire );
}

function wp_cache_replace( $key, $data, $group = '', $expire = 0 ) {
	global $wp_object_cache;
	return $wp_object_cache->replace( $key, $data, $group, (int) $expire );
}

function wp_cache_set( $key, $data, $group = '', $expire = 0 ) {
	global $wp_object_cache;
	return $wp_object_cache->set( $key, $data, $group, (int) $expire );
}

function wp_cache_set_multiple( array $data, $group = '', $expire = 0 ) {
	global $wp_object_cache;
	return $wp_object_cache->set_multiple( $data, $group, (int) $expire );
}

function wp_cache_get( $key, $group = '', $force = false, &$found = null ) {
	global $wp_object_cache;
	return $wp_object_cache->get( $key, $group, $force, $found );
}

function wp_cache_get_multiple( $keys, $group = '', $force = false ) {
	global $wp_object_cache;
	return $wp_object_cache->get_multiple( $keys, $group, $force );
}

function wp_cache_delete( $key, $group = '' ) {
	global $wp_object_cache;
	return $wp_object_cache->delete( $key, $group );
}

function wp_cache_delete_multiple( array $keys, $group = '' ) {
	global $wp_object_cache;
	return $wp_object_cache->delete_multiple( $keys, $group );
}

function wp_cache_incr( $key, $offset = 1, $group = '' ) {
	global $wp_object_cache;
	return $wp_object_cache->incr( $key, $offset, $group );
}

function wp_cache_decr( $key, $offset = 1, $group = '' ) {
	global $wp_object_cache;
	return $wp_object_cache->decr( $key, $offset, $group );
}

function wp_cache_flush() {
	global $wp_object_cache;
	return $wp_object_cache->flush();
}

function wp_cache_flush_runtime() {
	global $wp_object_cache;
	return $wp_object_cache->flush_runtime();
}

function wp_cache_flush_group( $group ) {
	global $wp_object_cache;
	return $wp_object_cache->flush_group( $group );
}

function wp_cache_supports( $feature ) {
	return in_array(
		$feature,
		array( 'add_multiple', 'set_multiple', 'get_multiple', 'delete_multiple', 'flush_runtime', 'flush_group' ),
		true
	);
}

function wp_cache_close() {
	global $wp_object_cache;
	return $wp_object_cache->close();
}

function wp_cache_add_global_groups( $groups ) {
	global $wp_object_cache;
	$wp_object_cache->add_global_groups( $groups );
}

function wp_cache_add_non_persistent_groups( $groups ) {
	global $wp_object_cache;
	$wp_object_cache->add_non_persistent_groups( $groups );
}

function wp_cache_switch_to_blog( $blog_id ) {
	global $wp_object_cache;
	$wp_object_cache->switch_to_blog( $blog_id );
}

function wp_cache_reset() {
	_deprecated_function( __FUNCTION__, '3.5.0', 'wp_cache_switch_to_blog()' );
	global $wp_object_cache;
	$wp_object_cache->flush_runtime();
}
