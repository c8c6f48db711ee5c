#!/bin/sh
# Installs Debian's dovecot-imapd when it is missing, for the IMAP tests (the fixture starts its own
# unprivileged instance on a loopback port; the system service is not used).
set -eu
if command -v dovecot >/dev/null 2>&1 || [ -x /usr/sbin/dovecot ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "ensure-dovecot: dovecot is missing and I cannot install it (not root, no sudo)" >&2; exit 1
fi
echo "ensure-dovecot: installing dovecot-imapd from Debian's packages" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
# policy-rc.d keeps the package from starting the system-wide service on ports 143/993.
made_policy=no
if [ ! -e /usr/sbin/policy-rc.d ]; then
    $SUDO sh -c 'printf "#!/bin/sh\nexit 101\n" > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d'
    made_policy=yes
fi
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null
if [ "$made_policy" = yes ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
