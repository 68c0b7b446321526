# Steps of test_in_dom0.sh that move real guests, sourced by it after steps_own.sh: xm save /
# restore / save -c / restore -p, live and non-live xm migrate to localhost (plain and TLS),
# and the faults: a stream cut by the network, a receiver killed mid-stream, a destination
# without the memory, a full disk, a read-only directory. The guest (`mv`) prints a tick a
# second: after every move its counter must go on from where it was, with no second boot.
# Figures are printed as "FIGURE ..." lines (bytes, seconds, MiB/s), beside xl's own save,
# restore of the same guest at the end (and xl's live migration of the PVH one).

MV_IMG=$WORK/mv.img              # its disk
SAVES=/tmp/saves                 # images (a tmpfs of their own: dom0's / is half its memory)
CERTS=/xenvm-certs               # the relocation TLS key, certificate and CA (test_realxen.py)
CUT_PORT=8102                    # a proxy to the relocation port that cuts the stream
DEAD_PORT=8103                   # a receiver that dies mid-stream

last_tick() { sed -n 's/.*xenvm-guest: tick \([0-9]*\).*/\1/p' "$(console_of "$1")" 2>/dev/null | tail -n 1; }
tick_after() { [ "$(last_tick "$1")" -ge "$2" ] 2>/dev/null; }
# ticks_go_on NAME FROM: the counter passes FROM+3 (it goes on), and the guest booted once
ticks_go_on() {
    local name=$1 from=$2
    if ! wait_for 90 tick_after "$name" $((from + 3)); then
        show_console "$name" 8; fail "$name's counter did not go on past $from"; return 1
    fi
    [ "$(count_said "$name" "xenvm-guest: hello")" = 1 ] || { show_console "$name" 20; fail "$name booted again"; return 1; }
    info "$name counts on: tick $from -> $(last_tick "$name")"
}
mv_running() { xl list mv 2>/dev/null | awk 'NR == 2 {exit !($5 ~ /^-?[rb-]+$/ && $5 !~ /[psc]/)}'; }
secs_since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
figure() {  # figure WHAT BYTES SECONDS
    awk -v w="$1" -v b="$2" -v s="$3" 'BEGIN {printf "FIGURE %s: %d bytes in %.2f s = %.1f MiB/s\n", w, b, s, (s > 0 ? b / 1048576 / s : 0)}'
}
mem_bytes() { echo $(( $(xl list "$1" | awk 'NR == 2 {print $3}') * 1048576 )); }
need_mv() {
    need_xend || return 77
    xl_has mv || { skip "no mv guest (step move-start)"; return 77; }
}
only_domains() {  # the guests xl lists besides dom0, sorted
    xl list | awk 'NR > 2 {print $1}' | sort | tr '\n' ' '
}

step_move_start() {
    need_xend || return
    mkdir -p "$SAVES"
    mountpoint -q "$SAVES" || mount -t tmpfs -o size=320M tmpfs "$SAVES" || { fail "cannot mount $SAVES"; return; }
    new_disk "$MV_IMG"
    own_cfg mv "extra = \"console=hvc0 quiet xenvm.count=1\"" "disk = ['file:$MV_IMG,xvda,w']" \
        "vif = ['mac=00:16:3e:5e:00:20,bridge=xenbr0']"
    own_create mv || return
    wait_for 30 tick_after mv 3 || fail "mv does not count"
    # what the guest wrote to its disk before any move: its boot counter, in sector 1
    dd if="$MV_IMG" bs=512 skip=1 count=1 2>/dev/null | grep -a -q "XENVMBOOT 1" || fail "mv's disk lacks what the guest wrote"
}

step_xm_save() {
    need_mv || return
    local t0 id size
    id=$(domid_of mv)
    rm -f "$SAVES/mv.save"
    t0=$(now)
    show xm save mv "$SAVES/mv.save" || { fail "xm save failed"; return; }
    figure "xm save (128 MiB guest)" "$(stat -c %s "$SAVES/mv.save")" "$(secs_since "$t0")"
    xl_has mv && fail "mv still exists after xm save"
    wait_for 30 no_trace_of "$id" || fail "the saved domain left traces"
    images_unused "$MV_IMG" || fail "mv's disk is still attached"
    size=$(stat -c %s "$SAVES/mv.save")
    [ "$size" -gt $((100 * 1048576)) ] || fail "the image ($size bytes) is smaller than the guest's memory"
    head -c 16 "$SAVES/mv.save" | grep -q LinuxGuestRecord || fail "not xend's image format"
}

step_xm_restore() {
    need_xend || return
    [ -f "$SAVES/mv.save" ] || { skip "no image (step xm-save)"; return; }
    local last t0
    last=$(last_tick mv)
    t0=$(now)
    show xm restore "$SAVES/mv.save" || { tail -n 20 /tmp/xend/xend.log; fail "xm restore failed"; return; }
    figure "xm restore (128 MiB guest)" "$(stat -c %s "$SAVES/mv.save")" "$(secs_since "$t0")"
    show xl list mv
    mv_running || fail "xl list does not show mv running"
    ticks_go_on mv "$last"
    dd if="$MV_IMG" bs=512 skip=1 count=1 2>/dev/null | grep -a -q "XENVMBOOT 1" || fail "the guest's disk lost what it wrote"
    xm list -l mv | grep -q "(uname file:$MV_IMG)" || fail "the restored guest lost its disk's config"
    rm -f "$SAVES/mv.save"           # dom0's /tmp is its memory
}

step_xm_save_c() {
    need_mv || return
    local id last
    id=$(domid_of mv); last=$(last_tick mv)
    show xm save -c mv "$SAVES/mv-c.save" || { fail "xm save -c failed"; return; }
    [ "$(domid_of mv)" = "$id" ] || fail "the checkpointed guest is not the same domain"
    ticks_go_on mv "$last"
    [ "$(stat -c %s "$SAVES/mv-c.save")" -gt $((100 * 1048576)) ] || fail "the checkpoint is too small"
    rm -f "$SAVES/mv-c.save"
}

step_xm_restore_p() {
    need_mv || return
    local last
    show xm save mv "$SAVES/mv.save" || { fail "xm save failed"; return; }
    last=$(last_tick mv)
    show xm restore -p "$SAVES/mv.save" || { fail "xm restore -p failed"; return; }
    [[ "$(xl_state mv)" == *p* ]] || { show xl list mv; fail "xm restore -p did not leave mv paused"; }
    sleep 3
    [ "$(last_tick mv)" = "$last" ] || fail "the paused guest counted"
    show xm unpause mv || fail "xm unpause failed"
    ticks_go_on mv "$last"
    rm -f "$SAVES/mv.save"
}

step_migrate_local() {
    need_mv || return
    local id last t0 bytes
    id=$(domid_of mv); last=$(last_tick mv); bytes=$(mem_bytes mv)
    t0=$(now)
    show xm migrate mv localhost || { tail -n 20 /tmp/xend/xend.log; fail "xm migrate failed"; return; }
    figure "xm migrate localhost, non-live (guest memory)" "$bytes" "$(secs_since "$t0")"
    [ "$(domid_of mv)" != "$id" ] || fail "mv is still the old domain"
    wait_for 30 no_trace_of "$id" || fail "the source domain left traces"
    ticks_go_on mv "$last"
    [ "$(only_domains)" = "g1 mv " ] || info "domains now: $(only_domains)"
    grep "Migrated domain mv to localhost" /tmp/xend/xend.log | tail -n 1
}

has_shadow() { xl info | grep -q "^virt_caps *:.* shadow"; }

step_migrate_local_live() {
    need_mv || return
    local id last t0 bytes before
    id=$(domid_of mv); last=$(last_tick mv); bytes=$(mem_bytes mv); before=$(only_domains)
    if ! has_shadow; then
        # a PV guest's live migration needs shadow paging, which Debian's Xen lacks:
        # refused before anything moves (the PVH guest migrates live: step move-pvh)
        if xm migrate --live mv localhost >"$WORK/live.out" 2>&1; then
            cat "$WORK/live.out"; fail "a PV live migration succeeded without shadow paging?"; return
        fi
        sed 's/^/    | /' "$WORK/live.out" | head -n 2
        grep -q "needs Xen's shadow paging" "$WORK/live.out" || fail "the refusal does not say why"
        stayed "$id" "$last" "$before"
        return
    fi
    t0=$(now)
    xm migrate --live mv localhost >"$WORK/live.out" 2>&1 || { cat "$WORK/live.out"; fail "xm migrate --live failed"; return; }
    figure "xm migrate --live localhost (guest memory)" "$bytes" "$(secs_since "$t0")"
    cat "$WORK/live.out"
    grep -q "final pause [0-9.]* s" "$WORK/live.out" || fail "xm migrate --live did not print its final pause"
    grep "final pause" /tmp/xend/xend.log | tail -n 1 | grep -q "live" || fail "the log does not report the final pause"
    [ "$(domid_of mv)" != "$id" ] || fail "mv is still the old domain"
    ticks_go_on mv "$last"
}

step_migrate_tls() {
    need_mv || return
    [ -f "$CERTS/ca.pem" ] || { skip "no certificates at $CERTS"; return; }
    local id last
    id=$(domid_of mv); last=$(last_tick mv)
    xm migrate --ssl mv localhost >"$WORK/tls.out" 2>&1 || { cat "$WORK/tls.out"; tail -n 20 /tmp/xend/xend.log; fail "xm migrate --ssl failed"; return; }
    cat "$WORK/tls.out"
    [ "$(domid_of mv)" != "$id" ] || fail "mv is still the old domain"
    ticks_go_on mv "$last"
    grep -E "Migrating domain mv .* over SSL" /tmp/xend/xend.log | tail -n 1 | grep -q SSL || fail "the log does not show an SSL migration"
}

# after a failed move: the source still runs and counts, nothing new anywhere
stayed() {
    local id=$1 last=$2 before=$3
    [ "$(domid_of mv)" = "$id" ] || { show xl list; fail "mv is not the same domain any more"; return 1; }
    mv_running || { show xl list mv; fail "mv is not running at the source"; return 1; }
    ticks_go_on mv "$last" || return 1
    wait_for 30 sh -c "[ \"\$(xl list | awk 'NR > 2 {print \$1}' | sort | tr '\n' ' ')\" = \"$before\" ]" \
        || { show xl list; fail "leftover domains: $(only_domains) (was $before)"; return 1; }
    xm list | grep -q "migrating-" && { fail "a migrating- name is left"; return 1; }
    return 0
}

step_migrate_cut() {
    need_mv || return
    local id last before proxy
    id=$(domid_of mv); last=$(last_tick mv); before=$(only_domains)
    # forwards to the relocation port, then cuts both ways after 24 MiB
    python3 - "$CUT_PORT" 8002 $((24 * 1048576)) >"$WORK/cut.log" 2>&1 <<'PY' &
import socket, sys, threading
listen, target, limit = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", listen)); srv.listen(1)
a, _ = srv.accept(); b = socket.create_connection(("127.0.0.1", target))
def back():
    try:
        while True:
            d = b.recv(65536)
            if not d: break
            a.sendall(d)
    except OSError: pass
threading.Thread(target=back, daemon=True).start()
sent = 0
while sent < limit:
    d = a.recv(min(65536, limit - sent))
    if not d: break
    b.sendall(d); sent += len(d)
print("cut after", sent, "bytes", flush=True)
for s in (a, b):
    s.shutdown(socket.SHUT_RDWR); s.close()
PY
    proxy=$!
    sleep 2
    if xm migrate mv localhost -p "$CUT_PORT" >"$WORK/cut.out" 2>&1; then
        cat "$WORK/cut.out"; fail "a migration cut by the network succeeded"
    fi
    sed 's/^/    | /' "$WORK/cut.out"; cat "$WORK/cut.log"
    grep -q "Error:" "$WORK/cut.out" || fail "xm printed no reason"
    kill "$proxy" 2>/dev/null; wait "$proxy" 2>/dev/null
    stayed "$id" "$last" "$before"
}

step_migrate_killed() {
    need_mv || return
    local id last before dead
    id=$(domid_of mv); last=$(last_tick mv); before=$(only_domains)
    # a receiver that reads 8 MiB of the stream and is killed (-9)
    python3 - "$DEAD_PORT" >"$WORK/dead.log" 2>&1 <<'PY' &
import os, signal, socket, sys
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen(1)
c, _ = srv.accept(); got = 0
while got < 8 * 1048576:
    d = c.recv(65536)
    if not d: break
    got += len(d)
print("killed after", got, "bytes", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
PY
    dead=$!
    sleep 2
    if xm migrate mv localhost -p "$DEAD_PORT" >"$WORK/dead.out" 2>&1; then
        cat "$WORK/dead.out"; fail "a migration to a killed receiver succeeded"
    fi
    sed 's/^/    | /' "$WORK/dead.out"; cat "$WORK/dead.log"
    grep -q "Error:" "$WORK/dead.out" || fail "xm printed no reason"
    wait "$dead" 2>/dev/null
    stayed "$id" "$last" "$before"
}

step_migrate_nomem() {
    need_mv || return
    local id last before free
    # the destination (this host) without the memory: dom0 given back to dom0-min-mem (so
    # xend cannot balloon it further), then a paused filler takes all but 48 MiB
    show xm mem-set Domain-0 "$DOM0_MIN_MEM" || { fail "xm mem-set Domain-0 failed"; return; }
    wait_for 60 sh -c "[ \$(xl list Domain-0 | awk 'NR == 2 {print \$3}') -le $((DOM0_MIN_MEM + 8)) ]" || info "dom0 is still $(dom0_mem) MiB"
    free=$(free_mem)
    printf 'name = "filler"\ntype = "pv"\nkernel = "%s"\nmemory = %d\n' "$GUEST_DIR/vmlinuz" $((free - 48)) >"$WORK/filler.cfg"
    timeout 180 xl create -p "$WORK/filler.cfg" >/dev/null 2>&1 || { fail "cannot create the filler"; return; }
    wait_for 30 sh -c 'xm list filler >/dev/null 2>&1'
    id=$(domid_of mv); last=$(last_tick mv); before=$(only_domains)
    if xm migrate mv localhost >"$WORK/nomem.out" 2>&1; then
        cat "$WORK/nomem.out"; fail "a migration to a host without the memory succeeded"
    fi
    sed 's/^/    | /' "$WORK/nomem.out"
    grep -q -i "memory\|ENOMEM\|I need" "$WORK/nomem.out" || fail "xm does not say the memory was missing"
    stayed "$id" "$last" "$before"
    xl destroy filler
    show xm mem-set Domain-0 900
}

step_save_full_disk() {
    need_mv || return
    local id last dir=$WORK/full
    mkdir -p "$dir"; mount -t tmpfs -o size=24M tmpfs "$dir" || { fail "cannot mount a small tmpfs"; return; }
    echo "an older image, kept" >"$dir/mv.save"
    id=$(domid_of mv); last=$(last_tick mv)
    if xm save mv "$dir/mv.save" >"$WORK/full.out" 2>&1; then
        cat "$WORK/full.out"; fail "a save to a full disk succeeded"
    fi
    sed 's/^/    | /' "$WORK/full.out"
    grep -q "$dir/mv.save" "$WORK/full.out" && grep -q -i "no space" "$WORK/full.out" || fail "the error lacks the path and the reason"
    [ "$(cat "$dir/mv.save")" = "an older image, kept" ] || fail "the existing image was not kept"
    [ "$(ls -A "$dir")" = mv.save ] || { ls -la "$dir"; fail "a torn or temporary file is left"; }
    [ "$(domid_of mv)" = "$id" ] && ticks_go_on mv "$last" || fail "mv does not run on after the failed save"
    umount "$dir"
}

step_save_read_only() {
    need_mv || return
    local id last dir=$WORK/ro
    mkdir -p "$dir"; mount -t tmpfs -o ro,size=1M tmpfs "$dir" || { fail "cannot mount a read-only tmpfs"; return; }
    id=$(domid_of mv); last=$(last_tick mv)
    if xm save mv "$dir/mv.save" >"$WORK/ro.out" 2>&1; then
        cat "$WORK/ro.out"; fail "a save into a read-only directory succeeded"
    fi
    sed 's/^/    | /' "$WORK/ro.out"
    grep -q "$dir/mv.save" "$WORK/ro.out" && grep -q -i "read-only" "$WORK/ro.out" || fail "the error lacks the path and the reason"
    [ "$(domid_of mv)" = "$id" ] && ticks_go_on mv "$last" || fail "mv does not run on after the failed save"
    umount "$dir"
}

step_move_pvh() {
    need_xend || return
    local last
    new_disk "$WORK/mvp.img"
    own_cfg mvp "type = 'pvh'" "$PVH_TSC" "extra = \"console=hvc0 quiet xenvm.count=1\"" \
        "disk = ['file:$WORK/mvp.img,xvda,w']"
    own_create mvp || return
    wait_for 30 tick_after mvp 3 || { fail "mvp does not count"; return; }
    show xm save mvp "$SAVES/mvp.save" || { fail "xm save of the PVH guest failed"; return; }
    last=$(last_tick mvp)
    show xm restore "$SAVES/mvp.save" || { fail "xm restore of the PVH guest failed"; return; }
    ticks_go_on mvp "$last" || return
    rm -f "$SAVES/mvp.save"
    last=$(last_tick mvp)
    local t0 bytes; t0=$(now); bytes=$(mem_bytes mvp)
    xm migrate --live mvp localhost >"$WORK/mvp-live.out" 2>&1 || { cat "$WORK/mvp-live.out"; fail "xm migrate --live of the PVH guest failed"; return; }
    figure "xm migrate --live localhost, PVH (guest memory)" "$bytes" "$(secs_since "$t0")"
    cat "$WORK/mvp-live.out"
    grep -q "final pause [0-9.]* s" "$WORK/mvp-live.out" || fail "xm migrate --live did not print its final pause"
    ticks_go_on mvp "$last" || return
    # xl's own live migration of the same guest (no ssh: xl runs its receiving end through sh)
    t0=$(now)
    if timeout 300 xl migrate -s '' mvp 'xl migrate-receive' >"$WORK/xl-migrate.out" 2>&1; then
        figure "xl migrate localhost, live, PVH (guest memory)" "$bytes" "$(secs_since "$t0")"
    else
        tail -n 5 "$WORK/xl-migrate.out"; info "xl migrate to localhost did not work here: no figure"
    fi
    show xm destroy mvp
}

# xl's own save, restore and migrate of the same guest, in the same run, for the figures
step_xl_figures() {
    need_mv || return
    local t0 bytes
    t0=$(now)
    timeout 300 xl save mv "$SAVES/xl.save" >"$WORK/xl-save.out" 2>&1 || { cat "$WORK/xl-save.out"; fail "xl save failed"; return; }
    figure "xl save (the same guest)" "$(stat -c %s "$SAVES/xl.save")" "$(secs_since "$t0")"
    t0=$(now)
    timeout 300 xl restore "$SAVES/xl.save" >"$WORK/xl-restore.out" 2>&1 || { cat "$WORK/xl-restore.out"; fail "xl restore failed"; return; }
    figure "xl restore (the same guest)" "$(stat -c %s "$SAVES/xl.save")" "$(secs_since "$t0")"
    rm -f "$SAVES/xl.save"
    wait_for 30 sh -c 'xm list mv >/dev/null 2>&1' || info "xend did not adopt xl's mv again"
}
