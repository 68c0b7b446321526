#!/bin/bash
# The two-host migration checks, run in each of two dom0s on one QEMU socket network
# (tests/xen/test_realxen_twohost.py boots them): XENVM_ROLE=a is 10.99.0.1, the guests' home;
# XENVM_ROLE=b is 10.99.0.2. Each runs xend (test_in_dom0.sh's xend-start, relocation open to
# the other host only, TLS with the CA check). a starts two counting guests (PV and PVH) and
# migrates them to b (the PV one non-live: Debian's Xen has no shadow paging for a PV guest's
# live migration; the PVH one live over TLS); b checks they arrived counting (no boot on its
# side) and sends them back the other way (PV over TLS, PVH live in the clear); a checks they
# came home counting, booted once. Output as test_in_dom0.sh's (=== STEP / --- PASS ...).
set -u
export XENVM_LIBRARY=1
ROLE=${XENVM_ROLE:?XENVM_ROLE=a or b}
A=10.99.0.1 B=10.99.0.2
if [ "$ROLE" = a ]; then ME=$A OTHER=$B; else ME=$B OTHER=$A; fi
export RELOCATION_HOSTS_ALLOW="$OTHER"
# shellcheck source=test_in_dom0.sh
. "$(dirname "$0")/test_in_dom0.sh"

WAIT=${XENVM_TWOHOST_WAIT:-900}     # how long one host waits for the other's guests

reachable() { python3 -c "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 3).close()" "$1" "$2" 2>/dev/null; }
guest_here() { xl list "$1" >/dev/null 2>&1 && xm list "$1" >/dev/null 2>&1; }
# counting GUEST [FROM]: its counter goes on here (past FROM+3, or past the first tick seen)
counting() {
    local g=$1 from=${2:-}
    [ -n "$from" ] || { wait_for 60 sh -c "grep -q 'tick' $(console_of "$g")" || return 1; from=$(last_tick "$g"); }
    wait_for 90 tick_after "$g" $((from + 3)) || { show_console "$g" 10; return 1; }
    info "$g counts on here: tick $from -> $(last_tick "$g")"
}

step_network() {
    show ip -br addr show
    wait_for "$WAIT" reachable "$OTHER" 8002 || { fail "the other host's relocation port ($OTHER:8002) never answered"; return; }
    wait_for 60 reachable "$OTHER" 8003 || fail "the other host's TLS relocation port never answered"
}

step_a_start_guests() {
    own_cfg tp "extra = \"console=hvc0 quiet xenvm.count=1\""
    own_cfg tpvh "type = 'pvh'" "$PVH_TSC" "extra = \"console=hvc0 quiet xenvm.count=1\""
    own_create tp || return
    own_create tpvh || return
    wait_for 30 tick_after tp 3 && wait_for 30 tick_after tpvh 3 || fail "the guests do not count"
}

step_a_send() {
    local t0
    t0=$(now)
    show xm migrate tp "$B" || { tail -n 20 /tmp/xend/xend.log; fail "xm migrate tp $B failed"; return; }
    info "tp to $B (non-live, TCP): $(elapsed "$t0") s"
    t0=$(now)
    show xm migrate --live --ssl tpvh "$B" || { tail -n 20 /tmp/xend/xend.log; fail "xm migrate --live --ssl tpvh $B failed"; return; }
    info "tpvh to $B (live, TLS): $(elapsed "$t0") s"
    xl_has tp || xl_has tpvh && fail "a guest is still here after its migration"
    return 0
}

step_b_receive() {
    wait_for "$WAIT" guest_here tp || { show xl list; fail "tp never arrived"; return; }
    wait_for "$WAIT" guest_here tpvh || { show xl list; fail "tpvh never arrived"; return; }
    show xl list
    counting tp || fail "tp does not count here"
    counting tpvh || fail "tpvh does not count here"
    said tp "xenvm-guest: hello" && fail "tp booted here"
    said tpvh "xenvm-guest: hello" && fail "tpvh booted here"
    return 0
}

step_b_send_back() {
    local t0
    t0=$(now)
    show xm migrate --ssl tp "$A" || { tail -n 20 /tmp/xend/xend.log; fail "xm migrate --ssl tp $A failed"; return; }
    info "tp back to $A (non-live, TLS): $(elapsed "$t0") s"
    t0=$(now)
    show xm migrate --live tpvh "$A" || { tail -n 20 /tmp/xend/xend.log; fail "xm migrate --live tpvh $A failed"; return; }
    info "tpvh back to $A (live, TCP): $(elapsed "$t0") s"
    wait_for 30 sh -c '! xl list tp >/dev/null 2>&1 && ! xl list tpvh >/dev/null 2>&1' || fail "a guest is still here"
}

step_a_home() {
    local g
    for g in tp tpvh; do
        wait_for "$WAIT" guest_here "$g" || { show xl list; fail "$g never came back"; continue; }
        counting "$g" || fail "$g does not count after coming back"
        [ "$(count_said "$g" "xenvm-guest: hello")" = 1 ] || fail "$g booted more than once"
    done
    show xl list
}

echo "twohost: role $ROLE ($ME), the other host $OTHER"
run_step xend-start      step_xend_start
run_step bridge          step_bridge
if [ "$ROLE" = a ]; then
    run_step a-start-guests step_a_start_guests
    run_step network        step_network
    run_step a-send         step_a_send
    run_step a-home         step_a_home
else
    run_step network        step_network
    run_step b-receive      step_b_receive
    run_step b-send-back    step_b_send_back
    # a's checks end when the guests are home: b stays up until a has seen them
    sleep 60
fi
run_step xend-stop       step_xend_stop
finish_run
