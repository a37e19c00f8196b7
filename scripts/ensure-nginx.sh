#!/usr/bin/env bash
# Makes sure nginx is installed for the replica test (two `serve` replicas
# behind it as the load balancer): installs Debian's `nginx-light` when
# missing (needs root and apt-get). The test runs its own nginx process on
# a free port with its own config; the system service is not used.
set -euo pipefail

say() { echo "ensure-nginx: $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
found() { command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; }

if found; then
  say "$( (nginx -v 2>&1 || /usr/sbin/nginx -v 2>&1) | head -n 1) is installed"
  exit 0
fi
say "installing Debian's nginx"
# An install cut short (a killed run) leaves dpkg "interrupted", and
# apt-get refuses to install anything until it is finished.
as_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a >/dev/null 2>&1 || true
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
  && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light >/dev/null \
  || as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null \
  || { say "error: could not install nginx (needs root and apt-get)"; exit 1; }
found || { say "error: nginx is not installed after the install"; exit 1; }
# The package starts a system nginx on port 80; the test does not need it.
as_root service nginx stop >/dev/null 2>&1 || true
say "$(/usr/sbin/nginx -v 2>&1 | head -n 1) installed"
