#!/bin/bash
# bench/RESULTS.md's real-Xen row: `xm list` in the dom0 of a real Xen 4.17 (tests/xen's QEMU
# harness) with one guest running, beside `xl list` and `python3 -c pass` in the same dom0.
# A measurement, not a test (speed is measured here, never in the suites). From the checkout:
#
#     tests/xen/run.sh -a .:/src -t 900 -s bench/xen_xm_list.sh
#
# It uses test_in_dom0.sh's steps (xend-start, guest-create) and prints a FIGURE line.
set -u
export XENVM_LIBRARY=1
# shellcheck source=../tests/xen/test_in_dom0.sh
. /src/tests/xen/test_in_dom0.sh

# xm list's time beside xl list's in this dom0 (bench/RESULTS.md's real-Xen row): the package
# byte-compiled in a site directory as pip lays it out, run by a console script as pip writes
# it; medians of 10 runs after one warm-up, with python3 -c pass as the interpreter's floor
time_ms() {
    local t0 t1
    t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N)
    echo $(((t1 - t0) / 1000000))
}
median_of() { sort -n | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
step_xm_list_time() {
    need_xend || return
    local site=/opt/xend-site i xm_ms xl_ms py_ms src_ms
    rm -rf "$site" && mkdir -p "$site" && cp -a "$SRC/xend" "$site/" || { fail "copy failed"; return; }
    python3 -m compileall -q "$site/xend" || { fail "compileall failed"; return; }
    printf '#!/usr/bin/python3\nimport sys\nfrom xend.xm.main import main\nsys.exit(main())\n' >"$site/xm"
    chmod 755 "$site/xm"
    env PYTHONPATH="$site:/opt/xend-pydeps" "$site/xm" list | grep -q "^Domain-0 " || { fail "the byte-compiled xm list failed"; return; }
    : >"$WORK/t-xm"; : >"$WORK/t-xl"; : >"$WORK/t-py"; : >"$WORK/t-src"
    for i in 0 1 2 3 4 5 6 7 8 9 10; do
        xm_ms=$(time_ms env PYTHONPATH="$site:/opt/xend-pydeps" "$site/xm" list)
        xl_ms=$(time_ms xl list)
        py_ms=$(time_ms python3 -c pass)
        src_ms=$(time_ms xm list)      # the suite's xm: the checkout, on PYTHONPATH
        [ "$i" = 0 ] && continue
        echo "$xm_ms" >>"$WORK/t-xm"; echo "$xl_ms" >>"$WORK/t-xl"; echo "$py_ms" >>"$WORK/t-py"
        echo "$src_ms" >>"$WORK/t-src"
    done
    xm_ms=$(median_of <"$WORK/t-xm"); xl_ms=$(median_of <"$WORK/t-xl"); py_ms=$(median_of <"$WORK/t-py")
    src_ms=$(median_of <"$WORK/t-src")
    echo "FIGURE xm list (byte-compiled, $(xl list | awk 'NR > 2' | wc -l) guest): ${xm_ms} ms; xl list ${xl_ms} ms; python3 -c pass ${py_ms} ms; ratio to xl $(awk -v a="$xm_ms" -v b="$xl_ms" 'BEGIN {printf "%.2f", a / b}')x (medians of 10, TCG; the checkout's xm ${src_ms} ms)"
}

run_step xend-start      step_xend_start
run_step guest-create    step_guest_create
run_step xm-list-time    step_xm_list_time
run_step xend-stop       step_xend_stop
finish_run
