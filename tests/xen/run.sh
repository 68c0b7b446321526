#!/bin/sh
# Boot Xen + dom0 under QEMU and run a command in dom0: see harness.py --help.
exec python3 "$(dirname "$0")/harness.py" "$@"
