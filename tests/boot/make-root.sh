#!/bin/sh
# make-root.sh DEB... - prints the path of a Debian 12 root (a tarball) for
# the boot tests, made once with mmdebstrap from this machine's own apt
# sources and kept in $BATCHTOK_BOOT_CACHE (default /var/cache/batchtok-boot).
#
# The root has systemd as init, D-Bus and logind (for user managers with
# lingering) and every package the given .deb files depend on, so that they
# install inside with apt-get and no network. A new root is made when the
# sources, the package list or mmdebstrap change, or the root is a week old;
# older ones are removed.
set -eu
cache=${BATCHTOK_BOOT_CACHE:-/var/cache/batchtok-boot}
[ $# -gt 0 ] || { echo "usage: make-root.sh DEB..." >&2; exit 2; }
command -v mmdebstrap >/dev/null || {
	echo "make-root.sh: mmdebstrap is missing: apt-get install mmdebstrap" >&2
	exit 1
}

# This machine's apt sources, wherever its apt configuration keeps them.
eval "$(apt-config shell list Dir::Etc::sourcelist/f parts Dir::Etc::sourceparts/d)"
sources=
for f in "$list" "$parts"/*.list "$parts"/*.sources; do
	[ -s "$f" ] && sources="$sources $f"
done
[ -n "$sources" ] || { echo "make-root.sh: no apt sources in $list or $parts" >&2; exit 1; }

# What the packages need at run time, from their own Depends (names only:
# the root is made from the same archive as the build machine).
deps=$(for d in "$@"; do dpkg-deb -f "$d" Depends; done |
	tr ',' '\n' | sed -e 's/[(|].*//' -e 's/[[:space:]]//g' |
	grep -v -e '^$' -e '^libbatchtok' | sort -u | tr '\n' ',')
pkgs="systemd,systemd-sysv,dbus,libpam-systemd,dbus-user-session,${deps%,}"

suite=$(. /etc/os-release && echo "$VERSION_CODENAME")
key=$( { echo "$suite $pkgs"; mmdebstrap --version; cat $sources; } | sha256sum | cut -c1-16)
root=$cache/root-$key.tar
# A week-old root is made again, so that it has the archive's updates.
if [ -s "$root" ] && [ -n "$(find "$root" -mtime +7)" ]; then
	rm -f "$root"
fi
if [ ! -s "$root" ]; then
	mkdir -p "$cache"
	tmp=$(mktemp "$cache/.root-XXXXXX.tar")
	trap 'rm -f "$tmp"' EXIT INT TERM
	# shellcheck disable=SC2086
	if ! mmdebstrap --quiet --variant=apt --format=tar --include="$pkgs" \
		"$suite" "$tmp" $sources >"$cache/mmdebstrap.log" 2>&1; then
		tail -n 20 "$cache/mmdebstrap.log" >&2
		echo "make-root.sh: mmdebstrap failed; the log is $cache/mmdebstrap.log" >&2
		exit 1
	fi
	mv "$tmp" "$root"
	trap - EXIT INT TERM
	# Older roots, and the leftovers of runs that were killed.
	find "$cache" -maxdepth 1 \( -name 'root-*.tar' ! -name "root-$key.tar" -o \
		-name '.root-*.tar' -mmin +60 \) -delete
fi
echo "$root"
