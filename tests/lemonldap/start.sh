#!/usr/bin/env bash
# Starts LemonLDAP::NG (its FastCGI server and nginx) unless it already answers, detached, so
# that it outlives the caller (the end-to-end tests call this once per run; stop.sh stops it).
# Configures it first (setup.sh --no-install) when the packages are there but $LLNG_WORK is not.
# Prints one line on stdout, "<portal URL> <work directory>", and what it did on stderr.
# Logs: $LLNG_WORK/logs/{llng,nginx,nginx-error,nginx-access}.log.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
discovery="${LLNG_PORTAL}.well-known/openid-configuration"
answers() { curl -fsS -o /dev/null --max-time 5 --resolve "$LLNG_HOST:$LLNG_PORT:127.0.0.1" "$discovery" 2>/dev/null; }
ours() { # our nginx and FastCGI server are alive (not another instance on the port)
  local f
  for f in "$LLNG_WORK/pids/nginx.pgid" "$LLNG_WORK/pids/llng.pgid"; do
    [ -s "$f" ] && kill -0 -- "-$(cat "$f")" 2>/dev/null || return 1
  done
}

llng_installed || {
  echo "LemonLDAP::NG is not installed: run \`sudo tests/lemonldap/setup.sh\` (Debian or Ubuntu: it installs lemonldap-ng, lemonldap-ng-fastcgi-server, nginx and a few Perl modules with apt, and configures them), or .ci/run" >&2
  exit 1
}
llng_need_root
mkdir -p "$LLNG_WORK"
# One starter at a time (test binaries may run side by side).
exec 9> "$LLNG_WORK/start.lock"
flock 9
t0=$EPOCHREALTIME
if ours && answers && grep -q "$LLNG_HOSTS_TAG" /etc/hosts; then
  echo "LemonLDAP::NG already running: $LLNG_PORTAL, logs in $LLNG_WORK/logs" >&2
  echo "$LLNG_PORTAL $LLNG_WORK"
  exit 0
fi
[ -e "$LLNG_WORK/configured" ] || "$LLNG_HERE/setup.sh" --no-install >&2
llng_hosts_line
"$LLNG_HERE/stop.sh" --quiet   # leftovers of an earlier run (a stale socket, a dead pid file)

# start_detached NAME CMD...: a new session, stdio on a log file; its process-group id in pids/.
start_detached() {
  local name="$1"; shift
  rm -f "$LLNG_WORK/pids/$name.pgid"
  setsid bash -c 'echo $$ > "$0"; exec "$@"' "$LLNG_WORK/pids/$name.pgid" "$@" \
    >> "$LLNG_WORK/logs/$name.log" 2>&1 < /dev/null 9>&- &
  for _ in $(seq 50); do [ -s "$LLNG_WORK/pids/$name.pgid" ] && break; sleep 0.1; done
}

sock="$LLNG_WORK/run/llng-fastcgi.sock"
rm -f "$sock"
LLNG_DEFAULTLOGGER=Lemonldap::NG::Common::Logger::Std start_detached llng \
  /usr/sbin/llng-fastcgi-server --foreground -u www-data -g www-data -n 3 \
  -s "$sock" -p "$LLNG_WORK/run/llng-fastcgi.pid"
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { echo "LL::NG's FastCGI server did not start:" >&2; tail -20 "$LLNG_WORK/logs/llng.log" >&2; exit 1; }
start_detached nginx nginx -c "$LLNG_WORK/nginx/nginx.conf" -g 'daemon off;'
for _ in $(seq 300); do answers && break; sleep 0.1; done
answers || {
  echo "LL::NG does not answer $discovery:" >&2
  tail -20 "$LLNG_WORK/logs/llng.log" "$LLNG_WORK/logs/nginx.log" "$LLNG_WORK/logs/nginx-error.log" >&2
  exit 1
}
awk -v a="$t0" -v b="$EPOCHREALTIME" -v p="$LLNG_PORTAL" -v w="$LLNG_WORK/logs" \
  'BEGIN { printf "LemonLDAP::NG started in %.1f s: %s, logs in %s\n", b - a, p, w }' >&2
echo "$LLNG_PORTAL $LLNG_WORK"
