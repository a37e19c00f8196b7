#!/usr/bin/env bash
# Makes sure Chromium and its WebDriver (chromedriver) are installed for the
# web chat's browser tests: installs Debian's `chromium` and
# `chromium-driver` when either is missing (needs root and apt-get).
set -euo pipefail

say() { echo "ensure-chromium: $*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  say "$(chromium --version 2>/dev/null | head -n 1) and chromedriver are installed"
  exit 0
fi
say "installing Debian's chromium and chromium-driver"
# An install cut short (a killed run) leaves dpkg "interrupted", and
# apt-get refuses to install anything until it is finished.
as_root env DEBIAN_FRONTEND=noninteractive dpkg --configure -a >/dev/null 2>&1 || true
as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
  && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null \
  || { say "error: could not install chromium (needs root and apt-get)"; exit 1; }
command -v chromedriver >/dev/null 2>&1 || { say "error: chromedriver is not on the PATH after the install"; exit 1; }
say "$(chromium --version 2>/dev/null | head -n 1) installed"
