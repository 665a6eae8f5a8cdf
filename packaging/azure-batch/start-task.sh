#!/bin/sh
# start-task.sh - the start task of an Azure Batch pool whose tasks share the
# pool's user-assigned managed identity through batchtokd (README.md beside
# this file says how to put it on a pool).
#
# Run as root (the start task's userIdentity: autoUser, scope Pool,
# elevationLevel Admin). It installs the batchtok .deb files with apt-get,
# writes an [identity node] for the pool's user-assigned identity into
# /etc/batchtok/batchtokd.conf, checks the config, enables the socket, lets
# the tasks' user in (the pool-scope auto-user _azbatch, by default, joins the
# group batchtok) and gets one token to prove the node's identity works.
#
# Batch runs the start task again on every reboot and reimage, and sometimes
# without either, so every step is idempotent: a second run with the same
# arguments changes nothing.
#
# Options (each also read from the environment variable named in brackets):
#   --client-id ID       the pool's user-assigned identity [BATCHTOK_CLIENT_ID]
#   --debs DIR           where the .deb files are [BATCHTOK_DEBS]; default:
#                        this script's directory (resource files land in the
#                        start task's working directory, an application
#                        package in $AZ_BATCH_APP_PACKAGE_<id>_<version>)
#   --users "U ..."      who may get tokens, added to the group batchtok
#                        [BATCHTOK_TASK_USERS]; default: _azbatch
#   --resources "R ..."  what tasks may ask for, the first the default
#                        [BATCHTOK_RESOURCES]; default: Batch's
#   --compat ADDR        loopback address of the endpoint `batchtok exec
#                        --compat` points SDKs at, or "off"
#                        [BATCHTOK_COMPAT_ENDPOINT]; default: 127.0.0.1:50342
# For tests only: BATCHTOK_TEST_IMDS_ENDPOINT, a loopback http:// URL used
# instead of the node's metadata service (http://169.254.169.254).
set -eu

prog=start-task.sh
conf=/etc/batchtok/batchtokd.conf
begin='# BEGIN batchtok Azure Batch start task: rewritten by start-task.sh on every run'
end='# END batchtok Azure Batch start task'

say() { echo "$prog: $*"; }
die() { echo "$prog: $*" >&2; exit 1; }
usage() {
	echo "usage: $prog --client-id ID [--debs DIR] [--users \"USER...\"]" \
		"[--resources \"URI...\"] [--compat ADDR|off]"
}

# Batch's admin auto-user may be a sudoer rather than root: run as root.
if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		exec sudo -n -E /bin/sh "$0" "$@"
	fi
	die "this needs root: give the start task userIdentity.autoUser with" \
		"scope Pool and elevationLevel Admin"
fi

client_id=${BATCHTOK_CLIENT_ID:-}
debs=${BATCHTOK_DEBS:-}
users=${BATCHTOK_TASK_USERS:-_azbatch}
resources=${BATCHTOK_RESOURCES:-https://batch.core.windows.net/}
compat=${BATCHTOK_COMPAT_ENDPOINT:-127.0.0.1:50342}
imds=${BATCHTOK_TEST_IMDS_ENDPOINT:-}

while [ $# -gt 0 ]; do
	case $1 in
	-h | --help) usage; exit 0 ;;
	--client-id | --debs | --users | --resources | --compat)
		[ $# -ge 2 ] || { usage >&2; exit 2; }
		case $1 in
		--client-id) client_id=$2 ;;
		--debs) debs=$2 ;;
		--users) users=$2 ;;
		--resources) resources=$2 ;;
		--compat) compat=$2 ;;
		esac
		shift 2 ;;
	*) usage >&2; exit 2 ;;
	esac
done

# --- what was asked for, checked before anything changes ---------------------

# Values end up in the config, one per line: none may hold a line break,
# and lists are split on blanks without globbing.
nl='
'
for v in "$client_id" "$debs" "$users" "$resources" "$compat" "$imds"; do
	case $v in
	*"$nl"*) die "a value holds a line break: give each option on one line" ;;
	esac
done
set -f
matches() { printf '%s\n' "$1" | grep -Eqx "$2"; }
# The words of a list given with blanks or commas, one space apart.
words() {
	# shellcheck disable=SC2046 # splitting is the point; globbing is off
	set -- $(printf '%s\n' "$1" | tr ',' ' ')
	echo "$*"
}
resources=$(words "$resources")
users=$(words "$users")

matches "$client_id" '[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}' ||
	die "no client ID, or not a GUID (\"$client_id\"): pass --client-id with the" \
		"clientId of the pool's user-assigned identity (az identity show" \
		"--query clientId)"
[ -n "$resources" ] || die "--resources names nothing: give at least one https:// URI"
for r in $resources; do
	matches "$r" 'https://[^;#[:space:]]+' ||
		die "resource \"$r\" is not an https:// URI (for example https://storage.azure.com/)"
done
case $compat in
off | "") compat= ;;
*) matches "$compat" '(127\.0\.0\.1|\[::1\]):[0-9]{1,5}' ||
	die "--compat \"$compat\" is not 127.0.0.1:PORT, [::1]:PORT or off" ;;
esac
if [ -n "$imds" ]; then
	matches "$imds" 'http://(127\.0\.0\.1|\[::1\]|localhost):[0-9]{1,5}/?' ||
		die "BATCHTOK_TEST_IMDS_ENDPOINT is for tests and takes a loopback" \
			"http:// URL only; on a Batch node leave it unset (the metadata" \
			"service is http://169.254.169.254)"
fi
[ -n "$users" ] || die "--users names nobody: name the user the tasks run as"
for u in $users; do
	id -u "$u" >/dev/null 2>&1 ||
		die "there is no user $u on this node: Batch creates the pool-scope" \
			"auto-user _azbatch when it provisions a node; for tasks that run" \
			"as a named user account, pass --users with its name"
done

command -v apt-get >/dev/null 2>&1 ||
	die "apt-get is missing: this start task installs .deb files and needs a" \
		"Debian or Ubuntu pool image"
command -v systemctl >/dev/null 2>&1 || die "systemctl is missing: batchtokd's units need systemd"

[ -n "$debs" ] || debs=$(dirname "$0")
[ -d "$debs" ] || die "$debs is not a directory: pass --debs with where the .deb files are"
debs=$(cd "$debs" && pwd)
set +f
set -- "$debs"/*.deb
set -f
[ -e "$1" ] || die "no .deb files in $debs: put batchtokd_*.deb and libbatchtok0_*.deb" \
	"there (resource files or an application package), or pass --debs"

# --- the packages ----------------------------------------------------------------

# The node's apt resolves what the packages depend on. A node may still be
# updating its packages when the start task runs: wait for dpkg's lock
# rather than fail. The config is ours once written (below): an upgrade
# keeps it (confold) instead of asking.
export DEBIAN_FRONTEND=noninteractive
apt_install() {
	apt-get install -y -q -o DPkg::Lock::Timeout=600 \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"
}
say "installing from $debs:$(for d in "$@"; do printf ' %s' "${d##*/}"; done)"
if ! apt_install "$@"; then
	say "the packages' dependencies are not in the current package lists: apt-get update, then again"
	apt-get update -q -o DPkg::Lock::Timeout=600 ||
		die "apt-get update failed (above): the node needs its package mirror"
	apt_install "$@" ||
		die "apt-get could not install the packages (above): were they built for" \
			"this node's release ($(
				# shellcheck source=/dev/null
				. /etc/os-release && echo "$PRETTY_NAME"))?"
fi
[ -f "$conf" ] || die "$conf is missing after installing batchtokd: reinstall it" \
	"(apt-get install --reinstall -o Dpkg::Options::=--force-confmiss batchtokd)"

# --- the identity ------------------------------------------------------------------

# Our lines sit between two markers at the end of the file: a rerun removes
# them and writes them again, so the file ends the same each time and
# whatever else an administrator put there stays.
tmp=$(mktemp "$conf.XXXXXX")
trap 'rm -f "$tmp" "$conf.start-task-old"' EXIT INT TERM
{
	awk -v b="$begin" -v e="$end" '$0 == b { skip = 1 } !skip { print } $0 == e { skip = 0 }' "$conf"
	echo "$begin"
	if [ -n "$compat" ]; then
		echo "[daemon]"
		echo "compat_endpoint = $compat"
		echo
	fi
	echo "[identity node]"
	echo "credential = managed-identity"
	echo "client_id = $client_id"
	echo "resources = $resources"
	echo "allow_groups = batchtok"
	[ -z "$imds" ] || echo "imds_endpoint = $imds    ; tests only"
	echo "$end"
} >"$tmp"
changed=no
if ! cmp -s "$tmp" "$conf"; then
	changed=yes
	chmod --reference="$conf" "$tmp"
	chown --reference="$conf" "$tmp"
	cp -p "$conf" "$conf.start-task-old"
	mv -f "$tmp" "$conf"
fi
if ! batchtokd --check-config; then
	[ "$changed" = no ] || mv -f "$conf.start-task-old" "$conf"
	die "batchtokd --check-config refused the config (above); $conf is as it was before this run"
fi
say "$conf: [identity node] for client ID $client_id ($([ "$changed" = yes ] && echo written || echo unchanged))"

# --- the tasks' user ---------------------------------------------------------------

# The socket is for the group batchtok (mode 0660), and the identity allows
# that group. Tasks started after this see the new group.
for u in $users; do
	if id -nG "$u" | tr ' ' '\n' | grep -qx batchtok; then
		say "$u is in the group batchtok already"
	else
		usermod -aG batchtok "$u"
		say "$u joined the group batchtok"
	fi
done

# --- the service -------------------------------------------------------------------

systemctl enable --now batchtokd.socket
# A running daemon (a rerun without a reboot) takes a changed config.
if [ "$changed" = yes ]; then
	systemctl try-restart batchtokd.service
fi

# One token now: a pool without this identity, or a node whose metadata
# service does not answer, fails its start task instead of every task.
# The daemon keeps the token, so the first tasks need no request.
default=${resources%% *}
if ! batchtok -t 3m get -i node -r "$default" >/dev/null; then
	die "the node could not get a token for $default with the identity" \
		"$client_id (batchtok's error above): is that user-assigned identity" \
		"assigned to the pool (identity.userAssignedIdentities)? Details:" \
		"batchtok status; journalctl -u batchtokd"
fi
say "ready: tasks run 'batchtok get -i node' or 'batchtok exec --compat -i node -- COMMAND'"
