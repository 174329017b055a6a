# Settings shared by the LemonLDAP::NG scripts (sourced). Everything but the packages lives in
# $LLNG_WORK: its own lemonldap-ng.ini and configuration directory (the packaged
# /etc/lemonldap-ng and /var/lib/lemonldap-ng/conf are left alone), keys, the nginx config, logs.
: "${LLNG_WORK:=${TMPDIR:-/tmp}/sso-sidecar-llng}"
# Below 10000: the tests' free_port() never hands such a port out, nor does bind(0).
: "${LLNG_PORT:=9480}"
LLNG_HOST=auth.example.com                     # the packaged domain (cookies for example.com)
LLNG_PORTAL="http://$LLNG_HOST:$LLNG_PORT/"    # LL::NG's `portal`, and its OIDC issuer (slash included)
LLNG_HOSTS_TAG="# sso-sidecar-llng-test"
LLNG_CLI=/usr/share/lemonldap-ng/bin/lemonldap-ng-cli
LLNG_PACKAGED_CONF=/var/lib/lemonldap-ng/conf/lmConf-1.json
# Read by every LL::NG process and tool started from these scripts: our ini, not /etc's.
export LLNG_DEFAULTCONFFILE="$LLNG_WORK/lemonldap-ng.ini"
export LLNG_WORK LLNG_PORT LLNG_PORTAL
LLNG_HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LLNG_PACKAGES=(lemonldap-ng lemonldap-ng-fastcgi-server nginx libemail-sender-perl
  libcrypt-openssl-bignum-perl libstring-random-perl liblwp-protocol-https-perl
  libhttp-parser-xs-perl libcookie-baker-xs-perl libgd-securityimage-perl libimage-magick-perl
  openssl curl python3)

llng_installed() { dpkg -s "${LLNG_PACKAGES[@]}" >/dev/null 2>&1; }

llng_need_root() {
  [ "$(id -u)" = 0 ] || {
    echo "$0: run as root (LL::NG runs as www-data, which owns its configuration; an /etc/hosts line for $LLNG_HOST)" >&2
    exit 1
  }
}

# The portal's host name on loopback (the sidecar and the tests resolve it through /etc/hosts).
llng_hosts_line() {
  grep -q "$LLNG_HOSTS_TAG" /etc/hosts 2>/dev/null \
    || echo "127.0.0.1 $LLNG_HOST $LLNG_HOSTS_TAG" >> /etc/hosts
}
