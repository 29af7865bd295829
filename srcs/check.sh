#!/usr/bin/env bash
# Checks a running Inception stack from the host, over 127.0.0.1 only.
#
#   srcs/check.sh                 the checks below, against the running stack
#   srcs/check.sh --persistence   also: create a post through the REST API, run
#                                 `compose down` and `compose up -d`, and find the post again
#
# COMPOSE picks the compose command (default: docker-compose; e.g. COMPOSE="docker compose").
# Needs curl and openssl on the host. Prints one line per check and "N passed, N failed".
set -uo pipefail
# No `grep -q` after a pipe: it exits at the first match, and the writer's SIGPIPE would then
# fail the pipeline under pipefail. The check's output goes to a file anyway.

SRCS=$(cd "$(dirname "$0")" && pwd)
SECRETS=${SECRETS:-$SRCS/../secrets}
COMPOSE=${COMPOSE:-docker-compose}
COMPOSE_FILE=$SRCS/docker-compose.yml

env_value() { sed -n "s/^$1=//p" "$SRCS/.env" | tail -n1; }
secret() { head -n1 "$SECRETS/$1.txt" | tr -d '\r\n'; }

DOMAIN=$(env_value DOMAIN_NAME)
TITLE=$(env_value WP_TITLE)
ADMIN_USER=$(env_value WP_ADMIN_USER)
WP_USER=$(env_value WP_USER)
FTP_USER=$(env_value FTP_USER)
BASE="https://$DOMAIN"
CURL=(curl -sk --max-time 15 --resolve "$DOMAIN:443:127.0.0.1")

passed=0
failed=0
check() { # check NAME COMMAND...
    local name=$1
    shift
    if "$@" >/tmp/inception-check.out 2>&1; then
        passed=$((passed + 1))
        printf 'ok    %s\n' "$name"
    else
        failed=$((failed + 1))
        printf 'FAIL  %s\n' "$name"
        sed 's/^/      /' /tmp/inception-check.out | head -n 8
    fi
}

home_has_title() {
    local page
    page=$("${CURL[@]}" -w '\n%{http_code}' "$BASE/") || return 1
    [ "$(tail -n1 <<<"$page")" = 200 ] || { echo "status $(tail -n1 <<<"$page")"; return 1; }
    grep -q "<title>$TITLE" <<<"$page" || { echo "no <title>$TITLE"; return 1; }
}

tls_refused() { # the server itself answers old versions with a protocol_version alert
    local v=$1 out
    out=$(openssl s_client -connect 127.0.0.1:443 -servername "$DOMAIN" "-$v" \
        -cipher 'DEFAULT:@SECLEVEL=0' </dev/null 2>&1)
    if grep -q 'Protocol  *: TLSv' <<<"$out" && ! grep -q 'alert' <<<"$out"; then
        echo "$v handshake succeeded"
        return 1
    fi
}

tls_accepted() {
    local v=$1
    "${CURL[@]}" "--tlsv$v" --tls-max "$v" -o /dev/null -w '%{http_code}' "$BASE/" | grep -x 200
}

port_closed() { ! curl -s --max-time 3 -o /dev/null "http://127.0.0.1:$1/"; }

first_post_listed() { "${CURL[@]}" "$BASE/" | grep 'Welcome to Inception'; }

two_users() {
    local users
    users=$("${CURL[@]}" "$BASE/wp-json/wp/v2/users?_fields=slug") || return 1
    echo "$users"
    docker exec wordpress php -r '
        $_SERVER["HTTP_HOST"] = getenv("DOMAIN_NAME");
        require "/var/www/html/wp-load.php";
        $a = get_user_by("login", $argv[1]); $u = get_user_by("login", $argv[2]);
        if (!$a || !in_array("administrator", $a->roles)) { echo "no administrator $argv[1]\n"; exit(1); }
        if (preg_match("/admin/i", $a->user_login)) { echo "administrator login contains admin\n"; exit(1); }
        if (!$u || array_intersect($u->roles, array("author", "editor")) === array()) { echo "no author/editor $argv[2]\n"; exit(1); }
    ' "$ADMIN_USER" "$WP_USER"
}

redis_ping() { docker exec wordpress redis-cli -h redis ping | grep -x PONG; }

object_cache() { docker exec wordpress wp-redis-check; }

ftp_lists_wordpress() {
    curl -s --max-time 15 --list-only "ftp://$FTP_USER:$(secret ftp_password)@127.0.0.1/" |
        grep -x wp-config.php
}

ftp_bad_password_refused() {
    ! curl -s --max-time 15 --list-only "ftp://$FTP_USER:not-the-password@127.0.0.1/"
}

adminer_login_page() { "${CURL[@]}" "$BASE/adminer/" | grep '<title>Login - Adminer'; }

site_page() {
    "${CURL[@]}" "$BASE/site/" | grep '<title>Inception: the stack' &&
        "${CURL[@]}" -o /dev/null -w '%{http_code}' "$BASE/site/style.css" | grep -x 200
}

status_all_up() { "${CURL[@]}" "$BASE/status/api" | grep '"all_up": true'; }

root_not_from_network() {
    docker exec -i wordpress php -r '
        mysqli_report(MYSQLI_REPORT_OFF);
        $l = @mysqli_connect("mariadb", "root", trim(stream_get_contents(STDIN)));
        if ($l) { echo "root logged in over the network\n"; exit(1); }
        echo mysqli_connect_error(), "\n";' < <(secret db_root_password)
}

wait_healthy() {
    local c
    for _ in $(seq 90); do
        local bad=0
        for c in mariadb redis wordpress nginx ftp adminer website status; do
            [ "$(docker inspect -f '{{.State.Health.Status}}' "$c" 2>/dev/null)" = healthy ] || bad=1
        done
        [ "$bad" = 0 ] && return 0
        sleep 2
    done
    return 1
}

persistence() {
    local app marker="Persistence check $(date +%s)"
    app=$(docker exec wordpress php -r '
        $_SERVER["HTTP_HOST"] = getenv("DOMAIN_NAME"); $_SERVER["HTTPS"] = "on";
        require "/var/www/html/wp-load.php";
        $u = get_user_by("login", $argv[1]);
        $r = WP_Application_Passwords::create_new_application_password($u->ID, array("name" => "check-" . time()));
        echo is_wp_error($r) ? "" : $r[0];' "$WP_USER") || return 1
    "${CURL[@]}" -u "$WP_USER:$app" -H 'Content-Type: application/json' \
        -d "{\"title\":\"$marker\",\"content\":\"Created before compose down.\",\"status\":\"publish\"}" \
        -o /dev/null -w '%{http_code}' "$BASE/wp-json/wp/v2/posts" | grep -x 201 ||
        { echo "REST create failed"; return 1; }
    $COMPOSE -f "$COMPOSE_FILE" down && $COMPOSE -f "$COMPOSE_FILE" up -d || return 1
    wait_healthy || { echo "stack not healthy after up"; return 1; }
    # Healthy is not yet converged: nginx re-resolves its upstreams on the first requests.
    for _ in $(seq 15); do
        "${CURL[@]}" "$BASE/" | grep "$marker" && return 0
        sleep 1
    done
    echo "post '$marker' is gone"
    return 1
}

check "home page answers 200 with the site title" home_has_title
check "TLS 1.0 refused" tls_refused tls1
check "TLS 1.1 refused" tls_refused tls1_1
check "TLS 1.2 accepted" tls_accepted 1.2
check "TLS 1.3 accepted" tls_accepted 1.3
check "nothing answers on port 80" port_closed 80
check "the first post (in MariaDB) is on the home page" first_post_listed
check "an administrator without 'admin' in its login, and an author" two_users
check "redis-cli -h redis ping from wordpress" redis_ping
check "WordPress object cache connected to Redis" object_cache
check "FTP login lists the WordPress files" ftp_lists_wordpress
check "FTP refuses a wrong password" ftp_bad_password_refused
check "Adminer login page through nginx" adminer_login_page
check "static site through nginx" site_page
check "status page through nginx: all services up" status_all_up
check "MariaDB root refused from the network" root_not_from_network
if [ "${1:-}" = --persistence ]; then
    check "a post survives compose down && up" persistence
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
