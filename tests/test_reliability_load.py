"""Load: 50 concurrent clients x 200 XML-RPC calls each, mixing list, info, pause and unpause,
against one xend; zero errors, every guest running at the end, threads back to normal."""
from __future__ import annotations

import random
import threading
import time

import pytest

from tests.daemon_helpers import XendInstance

CLIENTS = 50
CALLS = 200


def threads_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1])
    raise AssertionError("no Threads line")


def state_of(record: list) -> str:
    return next(v[1] for v in record[1:] if isinstance(v, list) and v[0] == "state")


@pytest.mark.timeout(170)
def test_fifty_clients_two_hundred_calls_each(tmp_path):
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

        errors: list = []
        done = [0] * CLIENTS
        start = threading.Barrier(CLIENTS)

        def client(i: int) -> None:
            rng = random.Random(i)
            mine = names[i]
            p = x.proxy(timeout=60)
            paused = False
            try:
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
            except BaseException as e:  # noqa: BLE001 - collected and reported below
                errors.append((i, done[i], repr(e)))

        threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(150)
        elapsed = time.monotonic() - t0
        assert not [t for t in threads if t.is_alive()], "clients still running"
        assert errors == [], errors[:5]
        assert sum(done) == CLIENTS * CALLS
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
