# Steps of test_in_dom0.sh for the guests xend builds itself (through libxl), sourced by it:
# devices, the store layout, console, memory and vcpus, the guest's own poweroff/reboot/crash
# and their on_* actions, PVH, refusals that leave nothing behind, managed guests across a
# xend restart, ballooning dom0. Uses the helpers of test_in_dom0.sh (fail, skip, show, info,
# wait_for, need_xend, compare_lists, xl_has ...).

# PVH guests run with tsc_mode 2 (native): TCG's CPU has no invariant TSC, so by default Xen
# emulates a PVH guest's every rdtsc, a VM exit of TCG's emulated SVM each, which now and then
# goes wrong (a triple fault just after an rdtsc of a restored guest); a PV guest's are not.
PVH_TSC="tsc_mode = 2"

# own_cfg NAME [LINE...]: an xm config file for the busybox guest, $WORK/NAME.cfg (later lines
# win: an xm config file is Python)
own_cfg() {
    local name=$1; shift
    {
        echo "name = \"$name\""
        echo "kernel = \"$GUEST_DIR/vmlinuz\""
        echo "ramdisk = \"$GUEST_DIR/initrd.gz\""
        echo "extra = \"console=hvc0 quiet\""
        echo "memory = 128"
        for line in "$@"; do echo "$line"; done
    } >"$WORK/$name.cfg"
}
# new_disk FILE [COMMAND]: a 64 MiB disk image; COMMAND ("reboot at 70") for the guest to obey
new_disk() {
    rm -f "$1"
    truncate -s 64M "$1"
    if [ -n "${2:-}" ]; then
        printf 'XENVMCMD %s\n' "$2" | dd of="$1" bs=512 count=1 conv=notrunc 2>/dev/null
    fi
}
console_of() { echo "$CONSOLE_DIR/guest-$1.log"; }
said() { grep -q -- "$2" "$(console_of "$1")" 2>/dev/null; }
count_said() { grep -c -- "$2" "$(console_of "$1")" 2>/dev/null || true; }
said_twice() { [ "$(count_said "$1" "$2")" -ge 2 ]; }
show_console() { sed 's/^/    guest| /' "$(console_of "$1")" 2>/dev/null | tail -n "${2:-20}"; }
domid_of() { xl domid "$1" 2>/dev/null; }
xl_mem_is() { [ "$(xl list "$1" 2>/dev/null | awk 'NR == 2 {print $3}')" = "$2" ]; }
vm_path_of() { xenstore-read "/local/domain/$(domid_of "$1")/vm" 2>/dev/null; }

# own_create NAME: xm create $WORK/NAME.cfg (fresh console log), wait until the guest is ready.
# Under TCG a PVH guest now and then dies early in its boot: its Linux measures the CPU's clock
# on a PIT it does not have, 100,000 port reads each a VM exit of TCG's emulated SVM, which
# goes wrong in about one boot of three (a triple fault inside that loop, other guests busy
# or not; on hardware the loop is a tenth of a second). A guest that dies (a triple fault in
# Xen's log, or its domain gone) or is not ready in 120 s is destroyed and created again, up
# to four times, before the step fails.
BOOT_ATTEMPTS=4
boot_done() {
    said "$1" "xenvm-guest: ready" || [ "$(domid_of "$1")" != "$2" ] \
        || xl dmesg | grep -q "d$2v[0-9]* Triple fault"
}
own_create() {
    local name=$1 t0 attempt id ok=1
    for attempt in $(seq "$BOOT_ATTEMPTS"); do
        rm -f "$(console_of "$name")"
        t0=$(now)
        show xm create "$WORK/$name.cfg" || { tail -n 30 /tmp/xend/xend.log; fail "xm create $name failed"; return 1; }
        id=$(domid_of "$name")
        info "xm create $name took $(elapsed "$t0")s"
        wait_for 120 boot_done "$name" "$id"
        if said "$name" "xenvm-guest: ready"; then
            info "guest $name ready $(elapsed "$t0")s after xm create"
            show_console "$name" 12
            ok=0; break
        fi
        info "guest $name (id $id) not ready after $(elapsed "$t0")s (attempt $attempt of $BOOT_ATTEMPTS)"
        show_console "$name" 5; show xl list
        xl dmesg | grep -A3 "d${id}v[0-9]* Triple fault" | grep -E "Triple|RIP:"
        xm destroy "$name" 2>/dev/null
        wait_for 30 sh -c "! xl list $name >/dev/null 2>&1"
    done
    [ "$ok" = 0 ] || fail "guest $name did not say it is ready ($BOOT_ATTEMPTS attempts)"
    return $ok
}

# no_trace_of DOMID: nothing of the domain is left: not in xl list, no store directory, no
# backends
no_trace_of() {
    local id=$1 left="" cls
    [ -n "$id" ] || return 0
    xl list 2>/dev/null | awk -v id="$id" 'NR > 1 && $2 == id {found = 1} END {exit !found}' && left="$left domain"
    xenstore-read "/local/domain/$id/name" >/dev/null 2>&1 && left="$left /local/domain/$id"
    for cls in vbd vif console vfb vkbd; do
        xenstore-list "/local/domain/0/backend/$cls/$id" >/dev/null 2>&1 && left="$left backend/$cls/$id"
    done
    [ -z "$left" ] || { info "domain $id left behind:$left"; return 1; }
}
# images_unused FILE...: no loop device is attached to them any more
images_unused() {
    local f
    for f in "$@"; do
        if losetup -a 2>/dev/null | grep -q -F "$f"; then
            info "loop device still on $f: $(losetup -a | grep -F "$f")"; return 1
        fi
    done
}

step_bridge() {
    need_xend || return
    # network-script network-bridge ran at xend's start and made the bridge vifs attach to
    show ip -br link show xenbr0 || { grep network-script /tmp/xend/xend.log | tail -n 5; fail "xenbr0 missing: the network-script did not make it"; return; }
    [ -d /sys/class/net/xenbr0/bridge ] || fail "xenbr0 is not a bridge"
}

# The guests whose own shutdowns are checked: started early, they act at the uptime their
# disk says (xend refuses to restart a guest that ran less than 60 s) while other steps run.
step_own_actions_start() {
    need_xend || return
    local g
    new_disk "$WORK/act-off.img" "poweroff at 20"
    new_disk "$WORK/act-reboot.img" "reboot at 70"
    new_disk "$WORK/act-crash.img" "crash at 70"
    own_cfg act-off "disk = ['file:$WORK/act-off.img,xvda,w']" "on_poweroff = 'destroy'"
    own_cfg act-reboot "disk = ['file:$WORK/act-reboot.img,xvda,w']" "on_reboot = 'restart'"
    # on_crash restart: the core file comes from enable-dump
    own_cfg act-crash "disk = ['file:$WORK/act-crash.img,xvda,w']" "memory = 96" \
        "on_crash = 'restart'"
    rm -rf "$DUMP_DIR"
    for g in act-off act-reboot act-crash; do
        rm -f "$(console_of "$g")"
        show xm create "$WORK/$g.cfg" || fail "xm create $g failed"
    done
    show xl list
}

step_own_create() {
    need_xend || return
    local loop id b
    new_disk "$WORK/g1.img"
    new_disk "$WORK/g1-ro.img"
    loop=$(losetup -f --show -r "$WORK/g1-ro.img") || { fail "losetup failed"; return; }
    echo "$loop" >"$WORK/g1.loop"
    own_cfg g1 "vcpus = 2" "maxmem = 160" "extra = \"console=hvc0 quiet xenvm.count=1\"" \
        "uuid = '$G1_UUID'" "cpus = '1'" "cpu_weight = 512" "cpu_cap = 150" \
        "disk = ['file:$WORK/g1.img,xvda,w', 'phy:$loop,xvdb,r']" \
        "vif = ['mac=00:16:3e:5e:00:01,bridge=xenbr0']"
    own_create g1 || return
    said g1 "disk xvda sectors=131072 ro=0 readable=yes" || fail "guest does not see xvda (64 MiB, rw, readable)"
    said g1 "disk xvdb sectors=131072 ro=1 readable=yes" || fail "guest does not see xvdb (64 MiB, ro, readable)"
    said g1 "nic eth0 mac=00:16:3e:5e:00:01" || fail "guest does not see eth0 with the configured MAC"
    # xl sees xend's guest with its memory and vcpus
    show xl list g1
    xl list g1 | awk 'NR == 2 {exit !($3 == 128 && $4 == 2)}' || fail "xl list does not show g1 with 128 MiB and 2 vcpus"
    # the backends are dom0's, connected by the hotplug scripts; the vif is on the bridge
    id=$(domid_of g1)
    for b in vbd/$id/51712 vbd/$id/51728 vif/$id/0; do
        [ "$(xenstore-read /local/domain/0/backend/$b/hotplug-status 2>/dev/null)" = connected ] \
            || fail "backend $b is not connected"
    done
    show ip -br link show master xenbr0
    ip -br link show master xenbr0 | grep -q "^vif$id.0" || fail "vif$id.0 is not on xenbr0"
    # uuid, affinity and the scheduler's weight and cap as configured
    [ "$(xl list -l g1 | sed -n 's/.*"uuid": "\(.*\)".*/\1/p' | head -n1)" = "$G1_UUID" ] || fail "g1's uuid is not the configured one"
    show xl vcpu-list g1
    [ "$(xl vcpu-list g1 | awk 'NR > 1 {print $7}' | sort -u)" = 1 ] || fail "g1's vcpus are not pinned to cpu 1"
    show xl sched-credit2 -d g1
    xl sched-credit2 -d g1 | awk 'NR == 2 {exit !($3 == 512 && $4 == 150)}' || fail "g1's credit2 weight/cap are not 512/150"
}

step_own_store() {
    need_xend || return
    xl_has g1 || { skip "no g1 (step own-create)"; return; }
    local id vm v
    id=$(domid_of g1); vm=$(vm_path_of g1)
    show xenstore-ls -f "/local/domain/$id" | grep -v -e '/device/' -e '/control/' | head -n 30
    [ "$(xenstore-read "/local/domain/$id/name")" = g1 ] || fail "name is not g1"
    [ "$(xenstore-read "/local/domain/$id/memory/target")" = 131072 ] || fail "memory/target is not 131072"
    [ "$(xenstore-read "/local/domain/$id/console/limit")" = $((CONSOLE_LIMIT_KIB * 1024)) ] \
        || fail "console/limit is not console-limit ($CONSOLE_LIMIT_KIB KiB)"
    [ "$(xenstore-read "/local/domain/$id/console/type")" = xenconsoled ] || fail "the console is not xenconsoled's"
    for v in 0 1; do
        [ "$(xenstore-read "/local/domain/$id/cpu/$v/availability")" = online ] || fail "cpu/$v/availability is not online"
    done
    [ "$(xenstore-read "$vm/name")" = g1 ] || fail "$vm/name is not g1"
    [ "$(xenstore-read "$vm/xend/restart_count")" = 0 ] || fail "$vm/xend/restart_count is not 0"
    xenstore-read "$vm/xend/config" | grep -q "(name g1)" || fail "$vm/xend/config lacks the config"
}

step_own_list() {
    need_xend || return
    xl_has g1 || { skip "no g1 (step own-create)"; return; }
    compare_lists Domain-0 g1
    xm list -l g1 >"$WORK/g1-long" || { fail "xm list -l g1 failed"; return; }
    cat "$WORK/g1-long"
    grep -q "(uname file:$WORK/g1.img)" "$WORK/g1-long" || fail "xm list -l lacks the file disk"
    grep -q "(uname phy:$(cat "$WORK/g1.loop"))" "$WORK/g1-long" || fail "xm list -l lacks the phy disk"
    grep -q "(mac 00:16:3e:5e:00:01)" "$WORK/g1-long" || fail "xm list -l lacks the vif's mac"
    grep -q "(kernel $GUEST_DIR/vmlinuz)" "$WORK/g1-long" || fail "xm list -l lacks the kernel"
}

step_own_console() {
    need_xend || return
    xl_has g1 || { skip "no g1 (step own-create)"; return; }
    # xm console becomes xenconsoled's client; g1 prints a tick a second. Under TCG, with the
    # act-* guests booting beside, xm alone may take 10 s to start: wait for a tick up to 60 s
    local pid t0
    t0=$(now)
    xm console g1 </dev/null >"$WORK/g1-console.out" 2>&1 &
    pid=$!
    wait_for 60 grep -q "xenvm-guest: tick" "$WORK/g1-console.out"
    info "xm console: first tick $(elapsed "$t0")s after it was started"
    sleep 3
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    info "xm console: $(wc -l <"$WORK/g1-console.out") lines"
    tail -n 3 "$WORK/g1-console.out"
    grep -q "xenvm-guest: tick" "$WORK/g1-console.out" || fail "xm console showed none of the guest's output"
}

# last_said NAME PREFIX WANT: the guest's last line starting with PREFIX is PREFIX WANT
last_said() {
    [ "$(grep -o -- "$2.*" "$(console_of "$1")" 2>/dev/null | tail -n 1 | tr -d '\r')" = "$2 $3" ]
}
vdevs_of() { xm block-list "$1" 2>/dev/null | awk 'NR > 1 {print $1}' | tr '\n' ' '; }
no_backend() { ! xenstore-list "/local/domain/0/backend/$1" >/dev/null 2>&1; }
# refused_cmd WHY PATTERN CMD...: CMD fails and says PATTERN
refused_cmd() {
    local why=$1 pattern=$2; shift 2
    if "$@" >"$WORK/refused.out" 2>&1; then
        cat "$WORK/refused.out"; fail "$why: '$*' succeeded"; return
    fi
    sed 's/^/    | /' "$WORK/refused.out" | head -n 3
    grep -q -- "$pattern" "$WORK/refused.out" || fail "$why: the error does not say '$pattern'"
}
# Devices after the build: a disk and a NIC come and go on the running g1, which sees them
# (its hot-plug watch prints "disks now: ..." / "nics now: ..."); refusals leave nothing.
step_own_hotplug() {
    need_xend || return
    xl_has g1 || { skip "no g1 (step own-create)"; return; }
    local id t0
    id=$(domid_of g1)
    new_disk "$WORK/g1-hot.img"
    refused_cmd "a missing disk file" "does not exist" xm block-attach g1 "file:$WORK/no-such.img" xvdc w
    no_backend "vbd/$id/51744" || fail "the refused block-attach left a backend"
    t0=$(now)
    show xm block-attach g1 "file:$WORK/g1-hot.img" xvdc w || { fail "xm block-attach failed"; return; }
    wait_for 60 said g1 "disks now: xvda xvdb xvdc" || { show_console g1; fail "the guest did not see xvdc come"; }
    info "xvdc in the guest $(elapsed "$t0")s after xm block-attach"
    said g1 "disk xvdc sectors=131072 ro=0 readable=yes" || fail "the guest does not see xvdc as 64 MiB, rw, readable"
    show xm block-list g1
    case " $(vdevs_of g1) " in *" 51744 "*) ;; *) fail "xm block-list lacks 51744 (xvdc)" ;; esac
    [ "$(xenstore-read "/local/domain/0/backend/vbd/$id/51744/hotplug-status" 2>/dev/null)" = connected ] \
        || fail "xvdc's backend is not connected"
    xm list -l g1 | grep -q "(uname file:$WORK/g1-hot.img)" || fail "xm list -l lacks the attached disk"
    t0=$(now)
    show xm block-detach g1 xvdc || fail "xm block-detach failed"
    wait_for 60 last_said g1 "disks now:" "xvda xvdb" || { show_console g1; fail "the guest did not see xvdc go"; }
    info "xvdc gone from the guest $(elapsed "$t0")s after xm block-detach"
    wait_for 30 no_backend "vbd/$id/51744" || fail "xvdc's backend is left behind"
    wait_for 30 images_unused "$WORK/g1-hot.img" || fail "a loop device is left on g1-hot.img"
    case " $(vdevs_of g1) " in *" 51744 "*) fail "xm block-list still shows xvdc" ;; esac

    refused_cmd "a bridge that does not exist" "nosuchbr0 does not exist" xm network-attach g1 bridge=nosuchbr0
    no_backend "vif/$id/1" || fail "the refused network-attach left a backend"
    t0=$(now)
    show xm network-attach g1 mac=00:16:3e:5e:00:02 bridge=xenbr0 || { fail "xm network-attach failed"; return; }
    wait_for 60 said g1 "nics now: eth0 eth1" || { show_console g1; fail "the guest did not see eth1 come"; }
    info "eth1 in the guest $(elapsed "$t0")s after xm network-attach"
    said g1 "nic eth1 mac=00:16:3e:5e:00:02" || fail "the guest's eth1 lacks the MAC given"
    show xm network-list g1
    [ "$(xm network-list g1 | awk 'NR > 1' | wc -l)" = 2 ] || fail "xm network-list does not show 2 vifs"
    ip -br link show master xenbr0 | grep -q "^vif$id.1" || fail "vif$id.1 is not on xenbr0"
    show xm network-detach g1 1 || fail "xm network-detach failed"
    wait_for 60 last_said g1 "nics now:" "eth0" || { show_console g1; fail "the guest did not see eth1 go"; }
    wait_for 30 no_backend "vif/$id/1" || fail "vif 1's backend is left behind"
    ! ip link show "vif$id.1" >/dev/null 2>&1 || fail "vif$id.1 is left in dom0"
    [ "$(xm network-list g1 | awk 'NR > 1' | wc -l)" = 1 ] || fail "xm network-list does not show 1 vif after the detach"
}

step_own_mem_set() {
    need_xend || return
    xl_has g1 || { skip "no g1 (step own-create)"; return; }
    show xm mem-set g1 100 || { fail "xm mem-set failed"; return; }
    show xenstore-read "/local/domain/$(domid_of g1)/memory/target"
    wait_for 90 xl_mem_is g1 100 || { show xl list g1; fail "xl list does not show 100 MiB for g1 within 90 s (the guest's balloon)"; return; }
    show xl list g1
    show xm mem-set g1 150 || { fail "xm mem-set up to 150 (maxmem 160) failed"; return; }
    wait_for 90 xl_mem_is g1 150 || { show xl list g1; fail "g1 did not grow to 150 MiB"; }
}

vcpu1_online() { xl vcpu-list g1 | awk 'NR == 3 {exit !($4 != "-")}'; }
vcpu1_offline() { ! vcpu1_online; }
step_own_vcpu_set() {
    need_xend || return
    xl_has g1 || { skip "no g1 (step own-create)"; return; }
    show xm vcpu-set g1 1 || { fail "xm vcpu-set failed"; return; }
    [ "$(xenstore-read "/local/domain/$(domid_of g1)/cpu/1/availability")" = offline ] || fail "cpu/1/availability is not offline"
    wait_for 30 vcpu1_offline || { show xl vcpu-list g1; fail "xl vcpu-list does not show vcpu 1 offline"; return; }
    show xl vcpu-list g1
    show xm vcpu-set g1 2 || fail "xm vcpu-set 2 failed"
    wait_for 60 vcpu1_online || { show xl vcpu-list g1; show xenstore-read "/local/domain/$(domid_of g1)/cpu/1/availability"; show_console g1 8; fail "vcpu 1 did not come back"; }
}

step_own_create_c() {
    need_xend || return
    new_disk "$WORK/g2.img"
    own_cfg g2 "disk = ['file:$WORK/g2.img,xvda,w']"
    rm -f "$(console_of g2)"
    # the boot, as xm create -c shows it through xenconsoled's client (which runs until
    # it is told to stop: once the guest is ready)
    timeout 240 xm create -c "$WORK/g2.cfg" </dev/null >"$WORK/g2-create-c.out" 2>&1 &
    local client=$!
    wait_for 240 grep -q "xenvm-guest: ready" "$WORK/g2-create-c.out"
    kill "$client" 2>/dev/null; wait "$client" 2>/dev/null
    sed 's/^/    | /' "$WORK/g2-create-c.out" | tail -n 12
    grep -q "Started domain g2" "$WORK/g2-create-c.out" || fail "xm create -c did not start g2"
    grep -q "xenvm-guest: hello" "$WORK/g2-create-c.out" || fail "xm create -c did not show the boot"
}

step_own_shutdown_w() {
    need_xend || return
    xl_has g2 || { skip "no g2 (step own-create-c)"; return; }
    wait_for 90 said g2 "xenvm-guest: ready" || { fail "g2 never got ready"; return; }
    local id; id=$(domid_of g2)
    show xm shutdown -w g2 || { fail "xm shutdown -w failed"; return; }
    # -w returns once the guest is down (as the original's: no longer running); xend then
    # destroys it (on_poweroff destroy), which takes the hotplug scripts' time under TCG
    xl_has g2 && [[ "$(xl_state g2)" != *[sd]* ]] && fail "g2 is still running after xm shutdown -w"
    wait_for 120 no_trace_of "$id" || fail "g2 (domain $id) left traces after its shutdown"
    images_unused "$WORK/g2.img" || fail "g2's disk is still attached"
}

step_own_pvh() {
    need_xend || return
    local id
    new_disk "$WORK/pvh.img"
    own_cfg pvh1 "type = 'pvh'" "$PVH_TSC" "maxvcpus = 2" "vcpus = 1" \
        "disk = ['file:$WORK/pvh.img,xvda,w']" "vif = ['bridge=xenbr0']"
    own_create pvh1 || return
    # maxvcpus 2, vcpus 1 (vcpu_avail 1): one of its two vcpus online
    show xl list pvh1
    [ "$(xenstore-read "/local/domain/$(domid_of pvh1)/cpu/1/availability")" = offline ] || fail "cpu/1/availability is not offline (vcpu_avail)"
    xl list pvh1 | awk 'NR == 2 {exit !($4 == 1)}' || fail "xl list does not show one vcpu online"
    said pvh1 "disk xvda sectors=131072 ro=0 readable=yes" || fail "the PVH guest does not see its disk"
    said pvh1 "nic eth0 mac=00:16:3e:" || fail "the PVH guest has no eth0 with a Xen MAC"
    xl list -l pvh1 | grep -m1 '"type"'
    xl list -l pvh1 | grep -q '"type": "pvh"' || fail "xl does not see a PVH guest"
    xl list -l pvh1 | grep -q '"tsc_mode": "native"' || fail "tsc_mode 2 did not reach libxl"
    id=$(domid_of pvh1)
    show xm destroy pvh1 || fail "xm destroy pvh1 failed"
    wait_for 30 no_trace_of "$id" || fail "pvh1 left traces"
    images_unused "$WORK/pvh.img" || fail "pvh1's disk is still attached"
}

step_own_pygrub() {
    need_xend || return
    local id
    # the disk holds an ext2 filesystem with the kernel, the initramfs and a grub.cfg
    cp "$GUEST_DIR/pygrub.img" "$WORK/pygrub.img"
    printf 'name = "pg1"\nbootloader = "pygrub"\nmemory = 128\ndisk = [%s]\n' \
        "'file:$WORK/pygrub.img,xvda,w'" >"$WORK/pg1.cfg"
    own_create pg1 || return
    said pg1 "xenvm.boot=pygrub" || fail "the guest was not booted from its grub.cfg (pygrub)"
    xm list -l pg1 | grep -q "(bootloader [^)]*pygrub)" || fail "xm list -l lacks the bootloader"
    id=$(domid_of pg1)
    show xm destroy pg1 || fail "xm destroy pg1 failed"
    wait_for 30 no_trace_of "$id" || fail "pg1 left traces"
}

# refused WHY PATTERN CFG: xm create CFG fails saying PATTERN, before anything was built
refused() {
    local why=$1 pattern=$2 cfg=$3 before after id
    before=$(xl list | awk 'NR > 1 {print $1}' | sort | tr '\n' ' ')
    if xm create "$cfg" >"$WORK/refused.out" 2>&1; then
        cat "$WORK/refused.out"; fail "$why: xm create succeeded"; return
    fi
    sed 's/^/    | /' "$WORK/refused.out" | head -n 3
    grep -q -- "$pattern" "$WORK/refused.out" || fail "$why: the error does not say '$pattern'"
    after=$(xl list | awk 'NR > 1 {print $1}' | sort | tr '\n' ' ')
    [ "$before" = "$after" ] || fail "$why: xl list changed ('$before' -> '$after')"
    for id in $(xenstore-list /local/domain); do
        [ "$(xenstore-read "/local/domain/$id/name" 2>/dev/null)" = "$(sed -n 's/^name = "\(.*\)"/\1/p' "$cfg")" ] \
            && fail "$why: /local/domain/$id is left"
    done
    return 0
}

step_own_refusals() {
    need_xend || return
    new_disk "$WORK/bad.img"
    own_cfg bad "builder = 'hvm'" "disk = ['file:$WORK/bad.img,hda,w']"
    sed -i -e '/^kernel/d' -e '/^ramdisk/d' "$WORK/bad.cfg"
    refused "HVM without a device model" "device model" "$WORK/bad.cfg"
    own_cfg bad
    sed -i 's|^kernel = .*|kernel = "/boot/no-such-kernel"|' "$WORK/bad.cfg"
    refused "a missing kernel" "no-such-kernel" "$WORK/bad.cfg"
    own_cfg bad "disk = ['file:$WORK/no-such-disk.img,xvda,w']"
    refused "a missing disk file" "does not exist: $WORK/no-such-disk.img" "$WORK/bad.cfg"
    own_cfg bad "vif = ['bridge=nosuchbr0']"
    refused "a missing bridge" "bridge nosuchbr0 does not exist" "$WORK/bad.cfg"
    printf 'name = "bad"\nbootloader = "no-such-loader"\nmemory = 128\n' >"$WORK/bad.cfg"
    refused "a missing bootloader" "no-such-loader is not installed" "$WORK/bad.cfg"
    own_cfg bad "vfb = ['vnc=1']"
    refused "a framebuffer without a device model" "need a device model" "$WORK/bad.cfg"
    # a vif whose hotplug script fails: xm says what the script wrote (its hotplug-error),
    # and libxl undid the half-built domain
    printf '#!/bin/sh\nxenstore-write "$XENBUS_PATH/hotplug-error" "xenvm: this vif is refused" "$XENBUS_PATH/hotplug-status" error\nexit 1\n' \
        >/etc/xen/scripts/vif-xenvm-fail
    chmod 755 /etc/xen/scripts/vif-xenvm-fail
    own_cfg bad "vif = ['bridge=xenbr0,script=vif-xenvm-fail']"
    refused "a vif whose hotplug script fails" "xenvm: this vif is refused" "$WORK/bad.cfg"
}

step_own_poweroff() {
    need_xend || return
    # act-off powered itself off at uptime 20: on_poweroff destroy
    if ! wait_for 150 sh -c '! xl list act-off >/dev/null 2>&1'; then
        show xl list; show_console act-off; fail "act-off still exists after its poweroff"; return
    fi
    said act-off "doing poweroff" || { show_console act-off; fail "act-off never powered off"; }
    images_unused "$WORK/act-off.img" || fail "act-off's disk is still attached"
    wait_for 20 sh -c '! xm list act-off >/dev/null 2>&1' || fail "xm still lists act-off"
}

step_own_reboot() {
    need_xend || return
    # act-reboot rebooted at uptime 70: on_reboot restart -> a second boot, a new domain
    if ! wait_for 240 said_twice act-reboot "xenvm-guest: ready"; then
        show xl list; show_console act-reboot 30; fail "act-reboot did not boot a second time"; return
    fi
    show_console act-reboot 8
    said act-reboot "boot 2" || fail "the second boot is not its disk's second boot"
    xl_has act-reboot || { fail "act-reboot is not running after its restart"; return; }
    [ "$(xenstore-read "$(vm_path_of act-reboot)/xend/restart_count" 2>/dev/null)" = 1 ] || fail "restart_count is not 1"
    show xm destroy act-reboot
}

step_own_crash() {
    need_xend || return
    local core
    # act-crash crashed at uptime 70: enable-dump -> a core file; on_crash restart -> a
    # second boot
    if ! wait_for 240 said_twice act-crash "xenvm-guest: ready"; then
        show xl list; show_console act-crash 40; fail "act-crash did not boot a second time"; return
    fi
    show_console act-crash 6
    show ls -l "$DUMP_DIR/act-crash"
    core=$(ls "$DUMP_DIR"/act-crash/*-act-crash.*.core 2>/dev/null | head -n1)
    [ -n "$core" ] || { fail "no core file in $DUMP_DIR/act-crash"; return; }
    # libxenctrl's ELF core of a 96 MiB guest
    [ "$(head -c 4 "$core" | od -An -c | tr -d ' ')" = '177ELF' ] || fail "the core is not an ELF file"
    [ "$(stat -c %s "$core")" -gt $((90 * 1024 * 1024)) ] || fail "the core is smaller than the guest's memory"
    rm -f "$core"
    show xm destroy act-crash
}

step_managed_restart() {
    need_xend || return
    local id
    new_disk "$WORK/gm.img"
    own_cfg gm "disk = ['file:$WORK/gm.img,xvda,w']" "vif = ['mac=00:16:3e:5e:00:0a,bridge=xenbr0']"
    show xm new "$WORK/gm.cfg" || { fail "xm new failed"; return; }
    rm -f "$(console_of gm)"
    show xm start gm || { fail "xm start gm failed"; return; }
    wait_for 120 said gm "xenvm-guest: ready" || { show_console gm; fail "gm not ready"; return; }
    id=$(domid_of gm)
    show service xend restart || { fail "service xend restart failed"; return; }
    if ! xl_has gm || [ "$(domid_of gm)" != "$id" ]; then
        show xl list; fail "gm did not keep running across the restart"; return
    fi
    show xm list gm || { fail "xm list gm failed after the restart"; return; }
    xm list -l gm >"$WORK/gm-long"
    grep -q "(uname file:$WORK/gm.img)" "$WORK/gm-long" && grep -q "(mac 00:16:3e:5e:00:0a)" "$WORK/gm-long" \
        || { cat "$WORK/gm-long"; fail "xm list -l gm lost the config after the restart"; }
    [ "$(count_said gm "xenvm-guest: hello")" = 1 ] || fail "gm booted again"
    show xm shutdown -w gm || fail "xm shutdown -w gm failed"
    show xm list gm           # managed: still listed, halted
    show xm delete gm || fail "xm delete gm failed"
    wait_for 30 no_trace_of "$id" || fail "gm left traces"
}

dom0_mem() { xl list Domain-0 | awk 'NR == 2 {print $3}'; }
free_mem() { xl info | sed -n 's/^free_memory *: *//p'; }

step_balloon() {
    need_xend || return
    local free dom0 want
    free=$(free_mem); dom0=$(dom0_mem)
    want=$((free + 100))
    info "free $free MiB, dom0 $dom0 MiB, dom0-min-mem $DOM0_MIN_MEM MiB: a guest of $want MiB"
    own_cfg big "memory = $want"
    show xm create "$WORK/big.cfg" || { grep -i balloon /tmp/xend/xend.log | tail -n 5; fail "xm create of a guest larger than free memory failed"; return; }
    show xl list
    [ "$(dom0_mem)" -lt "$dom0" ] || fail "dom0 was not ballooned down"
    [ "$(dom0_mem)" -ge "$DOM0_MIN_MEM" ] || fail "dom0 went below dom0-min-mem"
    show xm destroy big
}

step_balloon_refused() {
    need_xend || return
    local free dom0 want
    free=$(free_mem); dom0=$(dom0_mem)
    want=$((free + dom0 - DOM0_MIN_MEM + 64))
    own_cfg huge "memory = $want"
    refused "a guest larger than free memory and what dom0 may give" "dom0_min_mem is" "$WORK/huge.cfg"
}

step_dom0_cpus() {
    need_xend || return
    # dom0-cpus 1: xend takes dom0's second vcpu offline when it starts
    sed -i 's/^(dom0-cpus .*//' /tmp/xend/xend-config.sxp
    echo "(dom0-cpus 1)" >>/tmp/xend/xend-config.sxp
    show service xend restart || { fail "service xend restart failed"; return; }
    [ "$(xenstore-read /local/domain/0/cpu/1/availability)" = offline ] || fail "dom0's cpu/1/availability is not offline"
    if ! wait_for 30 sh -c 'xl vcpu-list Domain-0 | awk "NR == 3 {exit !(\$4 == \"-\")}"'; then
        show xl vcpu-list Domain-0; fail "dom0's vcpu 1 is still online"
    fi
    show xl vcpu-list Domain-0
    # back to both (xend does not put vcpus online again by itself: dom0-cpus 0 is "leave")
    sed -i 's/^(dom0-cpus .*//' /tmp/xend/xend-config.sxp
    xenstore-write /local/domain/0/cpu/1/availability online
    show service xend restart || fail "service xend restart failed"
}

step_xm_log() {
    need_xend || return
    xm log >"$WORK/xm-log" || { fail "xm log failed"; return; }
    info "xm log: $(wc -l <"$WORK/xm-log") lines"
    grep -q "Domain g1 ([0-9]*) created" "$WORK/xm-log" || fail "xm log does not show g1's creation"
}

step_leftovers() {
    need_xend || return
    local d
    for d in $(xl list | awk 'NR > 1 && $2 != 0 {print $1}'); do
        info "destroying leftover $d"; xl destroy "$d"
    done
    [ -z "$(xenstore-list /local/domain | grep -v -x 0)" ] || fail "store directories of gone domains: $(xenstore-list /local/domain | tr '\n' ' ')"
    [ -z "$(xenstore-list /local/domain/0/backend 2>/dev/null)" ] || { show xenstore-ls /local/domain/0/backend | head; fail "backends left"; }
    [ -n "$(cat "$WORK/g1.loop" 2>/dev/null)" ] && losetup -d "$(cat "$WORK/g1.loop")"
    [ -z "$(losetup -a)" ] || { show losetup -a; fail "loop devices left"; }
}
