#!/bin/sh
# Installs the Debian packages batchtok needs to build and test, if missing.
# Used by `make check`, `make demo` and `make bench` on a fresh machine; more
# packages may be named on the command line (`make valgrind` adds valgrind).
set -eu
pkgs="build-essential pkg-config libuv1-dev libcurl4-openssl-dev libssl-dev
libsystemd-dev libjansson-dev libinih-dev libhttp-parser-dev libcmocka-dev clang libclang-rt-14-dev
python3 python3-cryptography python3-pytest openssl systemd binutils
git dpkg-dev debhelper dh-python lintian rpm mandoc man-db python3-azure python3-requests
python3-pip python3-setuptools python3-prometheus-client azure-cli curl mmdebstrap
systemd-container procps $*"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
	echo "batchtok: missing build dependencies:$missing" >&2
	echo "batchtok: install them with: sudo apt-get install$missing" >&2
	exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# shellcheck disable=SC2086
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends $missing; } >"$log" 2>&1; then
	tail -n 30 "$log" >&2
	[ -r /var/log/apt/term.log ] && tail -n 15 /var/log/apt/term.log >&2
	echo "batchtok: installing the build dependencies failed (above: apt's last words)" >&2
	exit 1
fi
