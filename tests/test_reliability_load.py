"""Load: 50 concurrent clients x 60 XML-RPC calls each, mixing list, info, pause and unpause,
against one xend; zero errors, every guest running at the end, threads back to normal."""
from __future__ import annotations

import random
import threading
import time

import pytest

from tests.daemon_helpers import XendInstance

CLIENTS = 50
CALLS = 60


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line")


def run_clients(n: int, calls: int, client) -> float:
    """``client(i, start, done)`` in n threads at once (each waits on the barrier ``start``
    and counts its calls in ``done[i]``); every call made, no error; the seconds taken."""
    errors: list = []
    done = [0] * n
    start = threading.Barrier(n)

    def run(i: int) -> None:
        try:
            client(i, start, done)
        except BaseException as e:  # noqa: BLE001 - collected and reported below
            errors.append((i, done[i], repr(e)))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(150)
    elapsed = time.monotonic() - t0
    assert not [t for t in threads if t.is_alive()], "clients still running"
    assert errors == [], errors[:5]
    assert sum(done) == n * calls
    return elapsed


def state_of(record: list) -> str:
    return next(v[1] for v in record[1:] if isinstance(v, list) and v[0] == "state")


@pytest.mark.timeout(170)
def test_fifty_clients_sixty_calls_each(tmp_path):
    x = XendInstance(tmp_path / "x", host_memory_mib=8192)
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"\0" * 4096)
    x.start()
    try:
        proxy = x.proxy()
        names = [f"load{i}" for i in range(CLIENTS)]
        for name in names:     # one guest per client: its pause/unpause pairs are its own
            proxy.xend.domain.create(["vm", ["name", name], ["memory", "4"], ["vcpus", "1"],
                                      ["image", ["linux", ["kernel", str(kernel)]]]])
            proxy.xend.domain.unpause(name)
        pid = x.pid()
        base_threads = threads_of(pid)

        def client(i: int, start, done) -> None:
            rng = random.Random(i)
            mine = names[i]
            p = x.proxy(timeout=60)
            paused = False
            start.wait(30)
            for n in range(CALLS):
                what = rng.choice(("list", "list_names", "info", "domain", "toggle"))
                if what == "list":
                    recs = p.xend.domains_with_state(True, "all", False)
                    assert len(recs) == CLIENTS + 1
                elif what == "list_names":
                    assert mine in p.xend.domains_with_state(False, "all", False)
                elif what == "info":
                    assert p.xend.node.info()[0][0] == "system"
                elif what == "domain":
                    want = "p" if paused else "-"
                    state = state_of(p.xend.domain(mine))
                    assert (state[2] == "p") == paused, (mine, state, want)
                else:
                    if paused:
                        p.xend.domain.unpause(mine)
                    else:
                        p.xend.domain.pause(mine)
                    paused = not paused
                done[i] += 1
            if paused:
                p.xend.domain.unpause(mine)

        elapsed = run_clients(CLIENTS, CALLS, client)
        print(f"{CLIENTS * CALLS} calls from {CLIENTS} clients in {elapsed:.1f} s")

        # afterwards: every guest running, the daemon answering, its threads back down
        recs = proxy.xend.domains_with_state(True, "all", False)
        states = {next(v[1] for v in r[1:] if v[0] == "name"): state_of(r) for r in recs}
        assert set(states) == set(names) | {"Domain-0"}
        assert all(s[2] != "p" for s in states.values()), states
        x.wait_for(lambda: threads_of(pid) <= base_threads + 4, timeout=20)
    finally:
        x.stop()
        x.kill()


XENAPI_CLIENTS = 20
XENAPI_CALLS = 40


@pytest.mark.timeout(170)
def test_xenapi_twenty_clients_forty_calls_each(tmp_path):
    """The same over the Xen-API: 20 XenAPI clients (half on the unix socket, half on the TCP
    port) x 100 calls (records, pause/unpause of their own VM, host); zero errors, every VM
    running at the end, the legacy interface seeing the same, threads back to normal."""
    from tests.xenapi_helpers import XenAPIHost

    x = XenAPIHost(tmp_path / "x", host_memory_mib=8192)
    x.start()
    try:
        s = x.session()
        vms = []
        for i in range(XENAPI_CLIENTS):
            r = x.xm("create", str(x.vm_config(f"xload{i}", memory=4)))
            assert r.returncode == 0, r.stderr
        for i in range(XENAPI_CLIENTS):
            [vm] = s.xenapi.VM.get_by_name_label(f"xload{i}")
            vms.append(vm)
        pid = x.pid()
        base_threads = threads_of(pid)
        def client(i: int, start, done) -> None:
            rng = random.Random(i)
            mine = vms[i]
            api = (x.session() if i % 2 else x.tcp_session()).xenapi
            paused = False
            start.wait(30)
            for _ in range(XENAPI_CALLS):
                what = rng.choice(("all", "mine", "host", "metrics", "toggle"))
                if what == "all":
                    assert len(api.VM.get_all_records()) == XENAPI_CLIENTS + 1
                elif what == "mine":
                    state = api.VM.get_power_state(mine)
                    assert state == ("Paused" if paused else "Running"), (i, state)
                elif what == "host":
                    assert api.host.get_record(api.host.get_all()[0])["enabled"]
                elif what == "metrics":
                    api.VM_metrics.get_record(api.VM.get_metrics(mine))
                else:
                    (api.VM.unpause if paused else api.VM.pause)(mine)
                    paused = not paused
                done[i] += 1
            if paused:
                api.VM.unpause(mine)
            api.session.logout()

        elapsed = run_clients(XENAPI_CLIENTS, XENAPI_CALLS, client)
        print(f"{XENAPI_CLIENTS * XENAPI_CALLS} Xen-API calls from {XENAPI_CLIENTS} clients in "
              f"{elapsed:.1f} s")
        recs = s.xenapi.VM.get_all_records()
        assert {r["power_state"] for r in recs.values()} == {"Running"}
        legacy = x.proxy().xend.domains_with_state(True, "all", False)
        assert all("p" not in state_of(r)[2] for r in legacy)
        x.wait_for(lambda: threads_of(pid) <= base_threads + 4, timeout=20)
    finally:
        x.cleanup()
