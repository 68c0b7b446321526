#!/bin/sh
# Run a complete xend with the simulated hypervisor in a scratch directory, create a guest
# from an xm config file and show `xm list`. Nothing outside the scratch directory is touched.
set -e
DIR=${XEND_DEMO_DIR:-${TMPDIR:-/tmp}/xend-demo}
mkdir -p "$DIR"
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
xend start
xm list demo >/dev/null 2>&1 || xm create "$DIR/demo.cfg"
xm list
echo
echo "xend is running with XEND_CONFIG=$XEND_CONFIG (stop it: XEND_CONFIG=$XEND_CONFIG xend stop)"
