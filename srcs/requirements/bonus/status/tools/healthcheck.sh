#!/bin/bash
# Healthy when the status server answers its own health URL.
set -eu
exec python3 -c 'import sys, urllib.request; sys.exit(0 if urllib.request.urlopen("http://127.0.0.1:8000/healthz", timeout=3).status == 200 else 1)'
