#!/usr/bin/env python3
"""Status page of the Inception stack.

Probes each service over the stack's network with the protocol it speaks (TLS + HTTP for
nginx, FastCGI for php-fpm, the MariaDB handshake, Redis PING/INFO, the FTP greeting,
HTTP for the static site) and shows the result as a page that refreshes itself, and as
JSON at ./api. Standard library only; stops cleanly on SIGTERM.
"""

import html
import json
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("STATUS_PORT", "8000"))
DOMAIN = os.environ.get("DOMAIN_NAME", "localhost")
TIMEOUT = float(os.environ.get("STATUS_TIMEOUT", "3"))
CACHE_SECONDS = 5


def recv_line(sock):
    data = b""
    while not data.endswith(b"\n") and len(data) < 4096:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data.decode("utf-8", "replace").strip()


def http_status(sock, host, path="/"):
    sock.sendall(
        f"GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: inception-status\r\n\r\n".encode()
    )
    line = recv_line(sock)
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise RuntimeError(f"not an HTTP answer: {line!r}")
    return int(parts[1])


def probe_nginx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("nginx", 443), TIMEOUT) as raw:
        with ctx.wrap_socket(raw, server_hostname=DOMAIN) as tls:
            code = http_status(tls, DOMAIN, "/")
            version = tls.version()
    ok = code == 200
    return ok, f"{version}, GET / -> {code} (WordPress through nginx)"


def fcgi_record(rtype, request_id, content):
    return struct.pack("!BBHHBx", 1, rtype, request_id, len(content), 0) + content


def fcgi_params(params):
    out = b""
    for key, value in params.items():
        k, v = key.encode(), value.encode()
        for n in (len(k), len(v)):
            out += bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)
        out += k + v
    return out


def probe_fpm(host, label):
    """A FastCGI request for php-fpm's ping.path (/ping -> pong)."""
    params = fcgi_params(
        {"SCRIPT_NAME": "/ping", "SCRIPT_FILENAME": "/ping", "REQUEST_METHOD": "GET"}
    )
    req = (
        fcgi_record(1, 1, struct.pack("!HB5x", 1, 0))  # BEGIN_REQUEST, responder
        + fcgi_record(4, 1, params)
        + fcgi_record(4, 1, b"")
        + fcgi_record(5, 1, b"")
    )
    with socket.create_connection((host, 9000), TIMEOUT) as sock:
        sock.sendall(req)
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    ok = b"pong" in data
    return ok, f"php-fpm FastCGI ping: {'pong' if ok else 'no pong'} ({label})"


def probe_mariadb():
    with socket.create_connection(("mariadb", 3306), TIMEOUT) as sock:
        header = sock.recv(4)
        length = int.from_bytes(header[:3], "little")
        payload = b""
        while len(payload) < length:
            chunk = sock.recv(length - len(payload))
            if not chunk:
                break
            payload += chunk
    if not payload:
        raise RuntimeError("no handshake")
    if payload[0] == 0xFF:
        return False, "refused: " + payload[3:].decode("utf-8", "replace")
    version = payload[1:].split(b"\0", 1)[0].decode("ascii", "replace")
    version = version.removeprefix("5.5.5-")  # MariaDB's prefix for old MySQL clients
    return True, f"server handshake, version {version}"


def probe_redis():
    with socket.create_connection(("redis", 6379), TIMEOUT) as sock:
        sock.sendall(b"PING\r\n")
        pong = recv_line(sock)
        sock.sendall(b"INFO\r\n")
        head = recv_line(sock)
        size = int(head[1:]) if head.startswith("$") else 0
        body = b""
        while len(body) < size + 2:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
    info = {}
    for line in body.decode("utf-8", "replace").splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            info[k] = v
    keys = sum(
        int(v.split(",")[0].split("=")[1]) for k, v in info.items() if k.startswith("db")
    )
    hits, misses = int(info.get("keyspace_hits", 0)), int(info.get("keyspace_misses", 0))
    ratio = f"{100 * hits / (hits + misses):.0f}%" if hits + misses else "n/a"
    return pong == "+PONG", (
        f"PING -> {pong}, {keys} keys, {info.get('used_memory_human', '?')} used "
        f"of {info.get('maxmemory_human', '?')}, hit ratio {ratio}"
    )


def probe_ftp():
    with socket.create_connection(("ftp", 21), TIMEOUT) as sock:
        banner = recv_line(sock)
        sock.sendall(b"QUIT\r\n")
    return banner.startswith("220"), f"greeting: {banner}"


def probe_website():
    with socket.create_connection(("website", 8080), TIMEOUT) as sock:
        code = http_status(sock, "website", "/")
    return code == 200, f"GET / -> {code}"


SERVICES = [
    ("nginx", "entry point, TLS on 443", probe_nginx),
    ("wordpress", "WordPress on php-fpm", lambda: probe_fpm("wordpress", "WordPress")),
    ("mariadb", "database", probe_mariadb),
    ("redis", "object cache", probe_redis),
    ("ftp", "vsftpd on the WordPress files", probe_ftp),
    ("adminer", "database web client", lambda: probe_fpm("adminer", "Adminer")),
    ("website", "static site (lighttpd)", probe_website),
]

_lock = threading.Lock()
_cache = {"at": 0.0, "report": None}


def run_probe(entry):
    name, role, probe = entry
    start = time.monotonic()
    try:
        ok, detail = probe()
    except Exception as exc:  # the service is down or speaks nonsense: report it
        ok, detail = False, f"{type(exc).__name__}: {exc}"
    return {
        "service": name,
        "role": role,
        "up": bool(ok),
        "detail": detail,
        "ms": round((time.monotonic() - start) * 1000, 1),
    }


def report():
    with _lock:
        if _cache["report"] and time.monotonic() - _cache["at"] < CACHE_SECONDS:
            return _cache["report"]
        with ThreadPoolExecutor(max_workers=len(SERVICES)) as pool:
            results = list(pool.map(run_probe, SERVICES))
        rep = {
            "checked_at": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "all_up": all(r["up"] for r in results),
            "services": results,
        }
        _cache.update(at=time.monotonic(), report=rep)
        return rep


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="10">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Inception status</title>
<style>
body{{font-family:system-ui,sans-serif;background:#0f172a;color:#e2e8f0;margin:0;padding:2rem}}
h1{{margin:0 0 .2rem}} .sum{{font-size:1.2rem;margin:0 0 1.5rem}}
table{{border-collapse:collapse;width:100%;max-width:70rem}}
td,th{{text-align:left;padding:.5rem .8rem;border-bottom:1px solid #1e293b}}
.up{{color:#4ade80;font-weight:bold}} .down{{color:#f87171;font-weight:bold}}
small,.muted{{color:#94a3b8}} a{{color:#38bdf8}}
</style></head><body>
<h1>Inception status</h1>
<p class="sum {cls}">{summary}</p>
<table><tr><th>service</th><th>role</th><th>state</th><th>detail</th><th>time</th></tr>
{rows}
</table>
<p class="muted">Checked {checked}. This page refreshes every 10 s; JSON at <a href="api">api</a>.
<a href="../">Blog</a> &middot; <a href="../site/">Site</a> &middot; <a href="../adminer/">Adminer</a></p>
</body></html>
"""


def render(rep):
    rows = "\n".join(
        "<tr><td><b>{s}</b></td><td><small>{r}</small></td><td class='{c}'>{st}</td>"
        "<td>{d}</td><td>{ms} ms</td></tr>".format(
            s=html.escape(x["service"]),
            r=html.escape(x["role"]),
            c="up" if x["up"] else "down",
            st="up" if x["up"] else "DOWN",
            d=html.escape(x["detail"]),
            ms=x["ms"],
        )
        for x in rep["services"]
    )
    down = [x["service"] for x in rep["services"] if not x["up"]]
    summary = "All services are up." if not down else "Down: " + ", ".join(down)
    return PAGE.format(
        cls="up" if not down else "down",
        summary=html.escape(summary),
        rows=rows,
        checked=html.escape(rep["checked_at"]),
    )


class Handler(BaseHTTPRequestHandler):
    server_version = "inception-status"
    sys_version = ""

    def send(self, code, body, ctype):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self.send(200, "ok\n", "text/plain")
        elif path in ("/api", "/api/"):
            self.send(200, json.dumps(report(), indent=2) + "\n", "application/json")
        elif path in ("/", "/index.html"):
            self.send(200, render(report()), "text/html; charset=utf-8")
        else:
            self.send(404, "not found\n", "text/plain")

    do_HEAD = do_GET

    def log_message(self, fmt, *args):
        if not self.path.startswith("/healthz"):
            sys.stdout.write("%s %s\n" % (self.address_string(), fmt % args))


def main():
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True

    def stop(signum, _frame):
        print(f"signal {signum}: shutting down")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"status page on port {PORT}")
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
