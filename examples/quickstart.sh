#!/bin/sh
# Run a complete xend with the simulated hypervisor in a scratch directory, create a guest
# from an xm config file and show `xm list`. Nothing outside the scratch directory is touched.
# The scratch directory is a new one made by mktemp, unless XEND_DEMO_DIR names one (run again
# with the same XEND_DEMO_DIR, it finds its xend and guest and shows them again).
# xend and xm are the ones on PATH (README: the checkout's .venv/bin first).
set -e
XEND=$(command -v xend) && XM=$(command -v xm) || {
    echo "quickstart: xend and xm are not on PATH (README: install them into .venv first)" >&2
    exit 1
}
if [ -n "${XEND_DEMO_DIR:-}" ]; then
    DIR=$XEND_DEMO_DIR
    mkdir -p "$DIR"
else
    DIR=$(mktemp -d "${TMPDIR:-/tmp}/xend-demo.XXXXXX")
fi
DIR=$(cd "$DIR" && pwd)
cat > "$DIR/xend-config.sxp" <<CFG
# Every path xend uses, inside $DIR
(xend-pid-file $DIR/run/xend.pid)
(logfile $DIR/log/xend.log)
(xend-debug-logfile $DIR/log/xend-debug.log)
(xend-unix-xmlrpc-path $DIR/run/xmlrpc.sock)
(xend-unix-path $DIR/lib/xend-socket)
(xend-relocation-unix-path $DIR/lib/relocation-socket)
(xend-domains-path $DIR/lib/domains)
(xend-state-path $DIR/lib/state)
(xend-storage-path $DIR/lib/storage)
(xend-security-path $DIR/lib/security)
(xend-dump-path $DIR/dump)
(simulated-state-path $DIR/sim)
(hypervisor-backend simulated)
(loglevel INFO)
CFG
: > "$DIR/vmlinuz-demo"
cat > "$DIR/demo.cfg" <<CFG
# an xm domain config file, as for a real PV guest
name = "demo"
kernel = "$DIR/vmlinuz-demo"
memory = 256
vcpus = 1
disk = ['phy:/dev/vg0/demo,xvda,w']
vif = ['']
root = "/dev/xvda ro"
CFG
export XEND_CONFIG="$DIR/xend-config.sxp"
"$XEND" start
"$XM" list demo >/dev/null 2>&1 || "$XM" create "$DIR/demo.cfg"
"$XM" list
echo
echo "xend is left running; stop it with: $XEND -c $XEND_CONFIG stop"
