#!/usr/bin/env bash
# Installs LemonLDAP::NG from Debian (2.16 on bookworm) and configures it, from scratch, as the
# OpenID Provider of the end-to-end tests (tests/e2e/lemonldap.rs):
#   - its own ini and configuration directory in $LLNG_WORK (the packaged ones are not touched),
#   - the portal on http://auth.example.com:$LLNG_PORT/ (nginx on 127.0.0.1, an /etc/hosts line),
#   - the OIDC provider on, an RSA signing key (RS256), claims released at the scope's request,
#   - no relying party: each test registers its own (register-rp), with its own ports.
# Usage (root): tests/lemonldap/setup.sh [--no-install]
# Idempotent: every run resets LL::NG's configuration to the packaged one plus ours.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
llng_need_root
t0=$EPOCHREALTIME

# 1. Packages. Named explicitly because recommends may be off: without libemail-sender-perl the
# manager and lemonldap-ng-cli cannot load; without libimage-magick-perl the portal's captcha
# module fails and the portal does not start ("Initialization failed!").
if [ "${1:-}" != "--no-install" ] && ! llng_installed; then
  export DEBIAN_FRONTEND=noninteractive
  # (the package lists are updated only when the install cannot proceed without)
  apt-get install -y -qq "${LLNG_PACKAGES[@]}" >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq "${LLNG_PACKAGES[@]}" >/dev/null; }
fi
llng_installed || { echo "$0: LemonLDAP::NG is not installed (run $0 without --no-install)" >&2; exit 1; }
dpkg-query -W -f='${Package} ${Version}\n' lemonldap-ng nginx

mkdir -p "$LLNG_WORK"/{conf,keys,logs,run,nginx,pids}
chmod 755 "$LLNG_WORK" "$LLNG_WORK/run" "$LLNG_WORK/logs"
chown www-data:www-data "$LLNG_WORK/conf" "$LLNG_WORK/run"
chmod 750 "$LLNG_WORK/conf"

# 2. Our lemonldap-ng.ini (LLNG_DEFAULTCONFFILE points every LL::NG process here). No local
# configuration cache: each FastCGI worker re-reads the configuration file when it changed, at
# most checkTime seconds later, so a relying party registered by a test is live within ~2 s.
cat > "$LLNG_DEFAULTCONFFILE" <<EOF
[all]
logLevel = notice
checkTime = 1

[configuration]
type = File
dirName = $LLNG_WORK/conf
prettyPrint = 1

[portal]
staticPrefix = /static
templateDir = /usr/share/lemonldap-ng/portal/templates
languages = en

[handler]
status = 0
useRedirectOnError = 1

[manager]
protection = manager
staticPrefix = /static
templateDir = /usr/share/lemonldap-ng/manager/htdocs/templates
languages = en
enabledModules = conf, sessions, notifications, 2ndFA
EOF
chmod 644 "$LLNG_DEFAULTCONFFILE"

# 3. Signing key pair (kept across runs).
if [ ! -s "$LLNG_WORK/keys/oidc.key" ]; then
  openssl genrsa -traditional -out "$LLNG_WORK/keys/oidc.key" 2048 2>/dev/null
  openssl rsa -in "$LLNG_WORK/keys/oidc.key" -pubout -out "$LLNG_WORK/keys/oidc.pub" 2>/dev/null
fi

# 4. Configuration: the packaged lmConf-1 plus our fragment, merged with the CLI.
[ -s "$LLNG_PACKAGED_CONF" ] || { echo "$0: no packaged $LLNG_PACKAGED_CONF" >&2; exit 1; }
rm -f "$LLNG_WORK"/conf/lmConf-*.json
# (without its reload URL: the CLI would call localhost:80 after each save, and fail)
python3 -c 'import json, sys; c = json.load(open(sys.argv[1])); c["reloadUrls"] = {}; print(json.dumps(c, indent=1))' \
  "$LLNG_PACKAGED_CONF" > "$LLNG_WORK/conf/lmConf-1.json"
chown www-data:www-data "$LLNG_WORK/conf/lmConf-1.json"
chmod 640 "$LLNG_WORK/conf/lmConf-1.json"
python3 - "$LLNG_WORK/keys" > "$LLNG_WORK/fragment.json" <<'PY'
import json, os, sys
keys = sys.argv[1]
print(json.dumps({
    "portal": os.environ["LLNG_PORTAL"],
    "issuerDBOpenIDConnectActivation": 1,
    "oidcServicePrivateKeySig": open(f"{keys}/oidc.key").read(),
    "oidcServicePublicKeySig": open(f"{keys}/oidc.pub").read(),
    "oidcServiceKeyIdSig": "sso-sidecar-test-1",
}, indent=1))
PY
"$LLNG_CLI" -yes 1 -safe 1 -log "sso-sidecar tests: base" merge "$LLNG_WORK/fragment.json" \
  > "$LLNG_WORK/logs/setup-cli.log" 2>&1 \
  || { cat "$LLNG_WORK/logs/setup-cli.log" >&2; exit 1; }
ls "$LLNG_WORK"/conf/lmConf-2.json >/dev/null

# 5. nginx: the packaged portal vhost, on 127.0.0.1:$LLNG_PORT, with our FastCGI socket.
sock="$LLNG_WORK/run/llng-fastcgi.sock"
{
  cat <<EOF
user www-data;
worker_processes 2;
pid $LLNG_WORK/run/nginx.pid;
error_log $LLNG_WORK/logs/nginx-error.log;
events { worker_connections 256; }
http {
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  access_log $LLNG_WORK/logs/nginx-access.log;
  client_body_temp_path $LLNG_WORK/run/nginx-body;
  fastcgi_temp_path $LLNG_WORK/run/nginx-fastcgi;
  proxy_temp_path $LLNG_WORK/run/nginx-proxy;
  uwsgi_temp_path $LLNG_WORK/run/nginx-uwsgi;
  scgi_temp_path $LLNG_WORK/run/nginx-scgi;
EOF
  sed -e "s#listen 80;#listen 127.0.0.1:$LLNG_PORT;#" -e '/listen \[::\]:80;/d' \
      -e "s#unix:/var/run/llng-fastcgi-server/llng-fastcgi.sock#unix:$sock#" \
      -e "s#server_name auth.example.com;#server_name $LLNG_HOST;#" \
      /etc/lemonldap-ng/portal-nginx.conf
  echo "}"
} > "$LLNG_WORK/nginx/nginx.conf"
nginx -t -q -c "$LLNG_WORK/nginx/nginx.conf" -g 'error_log stderr;'

llng_hosts_line
touch "$LLNG_WORK/configured"
awk -v a="$t0" -v b="$EPOCHREALTIME" -v p="$LLNG_PORTAL" -v w="$LLNG_WORK" \
  'BEGIN { printf "LemonLDAP::NG set up in %.1f s: portal %s, files in %s\n", b - a, p, w }'
