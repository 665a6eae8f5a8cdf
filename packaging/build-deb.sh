#!/bin/sh
# build-deb.sh [OUTDIR] - builds the Debian packages (batchtokd, libbatchtok0,
# libbatchtok-dev, python3-batchtok) from this checkout with dpkg-buildpackage -us -uc -b, in a
# copy of the tracked files with packaging/debian as debian/, and puts the
# .deb files (and the .buildinfo/.changes) in OUTDIR (default build/deb).
set -eu
# Run from make (make check), the caller's variables (O=, SAN=1) must not
# reach the package's own build.
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES O SAN
top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top/build/deb}
version=$(sed -n '1s/.*(\(.*\)).*/\1/p' "$top/packaging/debian/changelog")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM
src=$work/batchtok-$version
mkdir -p "$src" "$out"
(cd "$top" && git ls-files -z | xargs -0 cp -P --parents -t "$src")
cp -RP "$top/packaging/debian" "$src/debian"
(cd "$src" && dpkg-buildpackage -us -uc -b) > "$out/build.log" 2>&1 || {
	tail -n 40 "$out/build.log"
	echo "build-deb: dpkg-buildpackage failed; the whole log is $out/build.log" >&2
	exit 1
}
cp "$work"/*.deb "$work"/*.buildinfo "$work"/*.changes "$out/"
ls "$out"/*.deb
