#!/bin/sh
# Installs Debian's postgresql when initdb/pg_ctl are missing, for the store tests (the fixture starts its
# own private cluster on a loopback port with initdb/pg_ctl; the system service is not used).
set -eu
if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    exit 0
fi
for bin in /usr/lib/postgresql/*/bin; do
    if [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ]; then exit 0; fi
done
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "ensure-postgres: PostgreSQL is missing and I cannot install it (not root, no sudo)" >&2; exit 1
fi
echo "ensure-postgres: installing postgresql from Debian's packages" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# policy-rc.d keeps the package from starting the system-wide cluster on port 5432.
made_policy=no
if [ ! -e /usr/sbin/policy-rc.d ]; then
    $SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
    made_policy=yes
fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
if [ "$made_policy" = yes ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
