#!/bin/sh
# make demo: batchtokd against the local fake token service, one token fetched
# with `batchtok get`, then `batchtok status`. Everything runs on loopback in
# a temporary directory and is stopped by PID at the end.
set -eu
build=${BATCHTOK_BUILD:-$(pwd)/build}
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/batchtok-demo.XXXXXX)
sts_pid= daemon_pid=
cleanup() {
	[ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
	[ -n "$sts_pid" ] && kill "$sts_pid" 2>/dev/null && wait "$sts_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "== starting the fake Entra ID token service (HTTPS on 127.0.0.1, CA made now)"
/usr/bin/python3 "$top/tests/fake_sts.py" "$work/sts" &
sts_pid=$!
i=0
while [ ! -f "$work/sts/port" ]; do
	i=$((i + 1)); [ $i -gt 200 ] && { echo "fake token service did not start" >&2; exit 1; }
	sleep 0.05
done
port=$(cat "$work/sts/port")

umask 077
printf '%s\n' demo-secret-not-for-production > "$work/demo.secret"
cat > "$work/batchtokd.conf" <<CONF
[daemon]
socket = $work/batchtokd.sock
ca_file = $work/sts/ca.pem

[identity demo]
credential = secret
tenant = 00000000-0000-0000-0000-000000000000
client_id = 11111111-1111-1111-1111-111111111111
secret_file = $work/demo.secret
authority_host = https://127.0.0.1:$port
resources = https://batch.core.windows.net/
CONF
echo "== config ($work/batchtokd.conf)"
cat "$work/batchtokd.conf"
"$build/batchtokd" --check-config -c "$work/batchtokd.conf"

echo "== starting batchtokd"
"$build/batchtokd" -c "$work/batchtokd.conf" &
daemon_pid=$!
i=0
while [ ! -S "$work/batchtokd.sock" ]; do
	i=$((i + 1)); [ $i -gt 200 ] && { echo "batchtokd did not start" >&2; exit 1; }
	sleep 0.05
done

echo "== batchtok get (first 60 characters of the token)"
token=$("$build/batchtok" -S "$work/batchtokd.sock" get)
printf '%.60s...\n' "$token"
echo "== batchtok inspect"
"$build/batchtok" -S "$work/batchtokd.sock" inspect
echo "== batchtok get -o json, again (served from the cache)"
"$build/batchtok" -S "$work/batchtokd.sock" get -o json | sed 's/"accessToken": "\(.\{20\}\).*"/"accessToken": "\1..."/'
echo "== batchtok status"
"$build/batchtok" -S "$work/batchtokd.sock" status
echo "== demo done: one upstream request served every call"
