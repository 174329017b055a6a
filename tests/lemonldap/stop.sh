#!/usr/bin/env bash
# Stops what start.sh started, by the process-group ids it recorded. The packages, the
# configuration and the /etc/hosts line stay (setup.sh resets the configuration).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
quiet=""; [ "${1:-}" = "--quiet" ] && quiet=1
for name in nginx llng; do
  f="$LLNG_WORK/pids/$name.pgid"
  [ -s "$f" ] || continue
  pg=$(cat "$f")
  if kill -TERM -- "-$pg" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 -- "-$pg" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pg" 2>/dev/null
    [ -n "$quiet" ] || echo "stopped $name (process group $pg)"
  fi
  rm -f "$f"
done
rm -f "$LLNG_WORK/run/llng-fastcgi.sock"
