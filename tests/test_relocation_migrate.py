"""Migration between two real xend daemons (two simulated hosts) over 127.0.0.1: live and
non-live, TLS, and every failure case, each checked on both hosts afterwards."""
from __future__ import annotations

import re
import subprocess
import time

import pytest

from tests.daemon_helpers import free_port, xm_command
from tests.relocation_helpers import (Host, Proxy, create, memory_digest, openssl_cert,
                                      restored_digest, running, tool_calls, write_tool)

ORIGIN = "127.0.0.1"


@pytest.fixture
def hosts(tmp_path):
    made = []

    def make(name: str, extra: str = "", **kw) -> Host:
        h = Host(tmp_path / name, extra=extra, **kw)
        made.append(h)
        return h.start()

    yield make
    for h in made:
        try:
            h.stop()
        finally:
            h.kill()


def migrate(src: Host, dom: str, dst: Host, *args: str, port=None, timeout=120):
    return src.xm("migrate", *args, dom, ORIGIN, "-p", str(port or dst.port), timeout=timeout)


def assert_stayed(src: Host, dst: Host, dom: str = "g1", dst_had=()) -> None:
    """The domain runs at the source under its own name; nothing new at the destination."""
    deadline = time.monotonic() + 10
    while True:
        guests = src.guests()
        if dom in guests and running(guests[dom]):
            break
        assert time.monotonic() < deadline, f"{dom} not running at the source: {guests}\n" \
            + src.log_tail()
        time.sleep(0.1)
    assert not any(n.startswith("migrating-") for n in guests), guests
    deadline = time.monotonic() + 10
    while sorted(dst.guests()) != sorted(dst_had) or len(dst.sim_domids()) != len(dst_had):
        assert time.monotonic() < deadline, \
            f"destination holds {dst.guests()} / {dst.sim_domids()}\n" + dst.log_tail()
        time.sleep(0.1)


def assert_moved(src: Host, dst: Host, dom: str = "g1") -> None:
    assert dom not in src.guests() and not src.sim_domids(), src.guests()
    guests = dst.guests()
    assert dom in guests and running(guests[dom]), guests


# -- success --------------------------------------------------------------------------------
@pytest.mark.timeout(180)
@pytest.mark.parametrize("live", [False, True], ids=["non-live", "live"])
def test_migrate_moves_the_domain_and_its_memory(hosts, tmp_path, live):
    """A guest that does not write its memory: the checksum before leaving equals the one
    after arriving, both as the hypervisor reads it."""
    a, b = hosts("a"), hosts("b")
    create(a, tmp_path, "g1", memory=96, args="sim.dirty_rate=0")
    before = memory_digest(a.sim_state(), a.domid("g1"))
    r = migrate(a, "g1", b, *(["-l"] if live else []))
    assert r.returncode == 0, r.stdout + r.stderr + a.log_tail()
    assert_moved(a, b)
    assert memory_digest(b.sim_state(), b.domid("g1")) == before
    assert "Migrated domain g1 to 127.0.0.1" in a.log()
    # a live migration's figures, final pause included, are printed by xm
    printed = re.search(r"Migrated g1 to 127\.0\.0\.1 \(live\): ([\d.]+) MiB in [\d.]+ s, "
                        r"final pause ([\d.]+) s", r.stdout)
    if live:
        assert printed and float(printed.group(1)) >= 96, r.stdout
    else:
        assert printed is None and r.stdout == "", r.stdout


@pytest.mark.timeout(180)
def test_live_migration_of_a_busy_guest_carries_its_last_writes(hosts, tmp_path):
    """A guest dirtying thousands of pages a second: live rounds, a short final pause, and the
    memory that arrives is exactly the source's memory at the moment of its final pause (taken
    by the migration tool at step 2, when the guest is paused for good)."""
    tool = write_tool(tmp_path, digest_state=tmp_path / "a" / "sim")
    a = hosts("a", extra=f"(external-migration-tool {tool})")
    b = hosts("b")
    create(a, tmp_path, "g1", memory=128, args="sim.dirty_rate=20000", vif=True)
    time.sleep(0.5)
    r = migrate(a, "g1", b, "-l")
    assert r.returncode == 0, r.stdout + r.stderr + a.log_tail()
    assert_moved(a, b)
    at_pause = (tmp_path / "digest-g1").read_text()
    assert restored_digest(b.sim_state(), b.domid("g1")) == at_pause
    rounds, _ = live_figures(a)
    assert rounds >= 1
    steps = [c.split(" -host")[0] for c in tool_calls(tmp_path)]
    assert steps == [f"-type vif -step {n}" for n in range(4)]


def live_figures(host: Host) -> tuple:
    """(rounds, final pause in seconds) of the last live migration in the host's log."""
    line = [ln for ln in host.log().splitlines() if "Migrated domain" in ln][-1]
    rounds = int(line.split(" rounds")[0].rsplit(" ", 1)[1])
    return rounds, float(line.split("final pause ")[1].split(" ")[0])


@pytest.mark.timeout(180)
def test_live_migration_final_pause_is_short(hosts, tmp_path):
    a, b = hosts("a"), hosts("b")
    create(a, tmp_path, "g1", memory=128, args="sim.dirty_rate=2000")
    time.sleep(0.5)
    r = migrate(a, "g1", b, "-l")
    assert r.returncode == 0, r.stdout + r.stderr + a.log_tail()
    assert_moved(a, b)
    rounds, pause = live_figures(a)
    assert rounds >= 1 and pause < 0.5, (rounds, pause)


@pytest.mark.timeout(180)
def test_migrate_back_and_forth_keeps_identity(hosts, tmp_path):
    a, b = hosts("a"), hosts("b")
    create(a, tmp_path, "g1", memory=32, args="sim.dirty_rate=0")
    uuid_before = dict((k, v) for k, v in
                       (x for x in a.proxy().xend.domain("g1")[1:] if len(x) == 2))["uuid"]
    before = memory_digest(a.sim_state(), a.domid("g1"))
    assert migrate(a, "g1", b, "-l").returncode == 0
    assert migrate(b, "g1", a).returncode == 0
    assert_moved(b, a)
    rec = dict((k, v) for k, v in (x for x in a.proxy().xend.domain("g1")[1:] if len(x) == 2))
    assert rec["uuid"] == uuid_before
    assert memory_digest(a.sim_state(), a.domid("g1")) == before


@pytest.mark.timeout(120)
def test_progress_and_migrating_name_while_in_flight(hosts, tmp_path):
    a, b = hosts("a"), hosts("b")
    create(a, tmp_path, "g1", memory=64)
    proxy = Proxy((ORIGIN, b.port), stall_after=4 * 1024 * 1024)
    try:
        proc = subprocess.Popen(xm_command() + ["migrate", "g1", ORIGIN, "-p", str(proxy.port)],
                                env=a.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        assert proxy.stalled.wait(30)
        assert "migrating-g1" in a.guests()
        progress = a.proxy().xend.node.progress()
        entry = next(p for p in progress if p["operation"] == "migrate")
        assert entry["domain"] == "g1" and 0 < int(entry["done"]) < int(entry["total"])
        assert b.proxy().xend.node.progress()[0]["operation"] == "restore"
        proxy.resume()
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, out + err
    finally:
        proxy.close()
    assert_moved(a, b)


# -- failures -------------------------------------------------------------------------------
@pytest.mark.timeout(120)
def test_connection_refused(hosts, tmp_path):
    a, b = hosts("a"), hosts("b")
    create(a, tmp_path, "g1")
    r = migrate(a, "g1", b, port=free_port())
    assert r.returncode != 0
    assert "can't connect: (111, 'Connection refused')" in r.stderr
    assert_stayed(a, b)


@pytest.mark.timeout(120)
def test_refused_by_hosts_allow(hosts, tmp_path):
    a = hosts("a")
    # in xend-config.sxp a regex's backslash is written twice (the SXP string escape)
    b = hosts("b", extra=r"(xend-relocation-hosts-allow '^localhost\\.attacker\\.example$ "
                         r"10.9.0.0/16')")
    create(a, tmp_path, "g1")
    r = migrate(a, "g1", b)
    assert r.returncode != 0
    assert "closed the connection without answering" in r.stderr, r.stderr
    assert_stayed(a, b)
    assert "Rejected connection from 127.0.0.1 (" in b.log()


@pytest.mark.timeout(120)
def test_hosts_allow_by_address_admits(hosts, tmp_path):
    a = hosts("a")
    b = hosts("b", extra="(xend-relocation-hosts-allow '10.9.0.0/16 127.0.0.0/8')")
    create(a, tmp_path, "g1", memory=32)
    r = migrate(a, "g1", b)
    assert r.returncode == 0, r.stderr
    assert_moved(a, b)


@pytest.mark.timeout(120)
def test_destination_out_of_memory(hosts, tmp_path):
    a = hosts("a")
    b = hosts("b", host_memory_mib=1024)        # dom0 takes a quarter: 768 MiB free
    create(a, tmp_path, "g1", memory=900)
    r = migrate(a, "g1", b)
    assert r.returncode != 0
    assert "(from 127.0.0.1)" in r.stderr and "memory" in r.stderr.lower(), r.stderr
    assert "Transport endpoint" not in r.stderr and "Broken pipe" not in r.stderr
    assert_stayed(a, b)


@pytest.mark.timeout(120)
def test_name_clash_at_the_destination(hosts, tmp_path):
    a, b = hosts("a"), hosts("b")
    create(a, tmp_path, "g1")
    (tmp_path / "b-cfg").mkdir()
    create(b, tmp_path / "b-cfg", "g1", memory=32)
    r = migrate(a, "g1", b)
    assert r.returncode != 0
    assert "VM name 'g1' already exists as domain" in r.stderr and "(from 127.0.0.1)" in r.stderr
    assert_stayed(a, b, dst_had=["g1"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("live", [False, True], ids=["non-live", "live"])
def test_connection_cut_mid_stream(hosts, tmp_path, live):
    a, b = hosts("a"), hosts("b")
    create(a, tmp_path, "g1", memory=64)
    proxy = Proxy((ORIGIN, b.port), cut_after=20 * 1024 * 1024)
    try:
        r = migrate(a, "g1", b, *(["-l"] if live else []), port=proxy.port)
    finally:
        proxy.close()
    assert r.returncode != 0
    assert "connection to 127.0.0.1 lost" in r.stderr, r.stderr
    assert_stayed(a, b)
    assert "Save failed on domain g1" in a.log()


@pytest.mark.timeout(180)
def test_receiver_killed_mid_stream(hosts, tmp_path):
    a, b = hosts("a"), hosts("b")
    create(a, tmp_path, "g1", memory=64)
    proxy = Proxy((ORIGIN, b.port), stall_after=8 * 1024 * 1024)
    try:
        proc = subprocess.Popen(xm_command() + ["migrate", "g1", ORIGIN, "-p", str(proxy.port)],
                                env=a.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        assert proxy.stalled.wait(30)
        assert len(b.sim_domids()) == 1, "the destination should be building the domain"
        b.kill()                                   # kill -9 the destination xend
        proxy.resume()
        out, err = proc.communicate(timeout=60)
    finally:
        proxy.close()
    assert proc.returncode != 0
    assert "connection to 127.0.0.1 lost" in err, err
    b.start()                                      # the destination comes back: nothing there
    assert_stayed(a, b)
    assert "migration from 127.0.0.1 was interrupted" in b.log()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("live", [False, True], ids=["non-live", "live"])
def test_sender_killed_mid_stream(hosts, tmp_path, live):
    a, b = hosts("a"), hosts("b")
    create(a, tmp_path, "g1", memory=64)
    proxy = Proxy((ORIGIN, b.port), stall_after=8 * 1024 * 1024)
    try:
        proc = subprocess.Popen(xm_command() + ["migrate", *(["-l"] if live else []), "g1",
                                                ORIGIN, "-p", str(proxy.port)],
                                env=a.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        assert proxy.stalled.wait(30)
        a.kill()                                   # kill -9 the source xend
        proxy.resume()
        proc.communicate(timeout=60)
    finally:
        proxy.close()
    assert proc.returncode != 0
    a.start()                                      # the source comes back and resumes it
    assert_stayed(a, b)
    assert "was interrupted; resuming it here" in a.log()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fail_step", [0, 1, 2])
def test_external_migration_tool_failing(hosts, tmp_path, fail_step):
    tool = write_tool(tmp_path, fail_step=fail_step)
    a = hosts("a", extra=f"(external-migration-tool {tool})")
    b = hosts("b")
    create(a, tmp_path, "g1", memory=64, vif=True)
    r = migrate(a, "g1", b)
    assert r.returncode != 0
    assert "Migration tool returned 3" in r.stderr, r.stderr
    assert_stayed(a, b)
    calls = tool_calls(tmp_path)
    done = [c for c in calls if "-recover" not in c]
    undone = [c.replace(" -recover", "") for c in calls if "-recover" in c]
    assert done[-1].startswith(f"-type vif -step {fail_step} ")
    assert undone == list(reversed(done[:-1]))      # every step that succeeded, undone
    assert "tool: refusing step" in a.log()


# -- TLS ------------------------------------------------------------------------------------
@pytest.fixture
def tls_pair(hosts, tmp_path):
    key, cert = openssl_cert(tmp_path)
    ssl_port = free_port()
    b = hosts("b", ssl_port=ssl_port, extra=(
        "(xend-relocation-ssl-server yes)\n"
        f"(xend-relocation-server-ssl-key-file {key})\n"
        f"(xend-relocation-server-ssl-cert-file {cert})\n"))
    return b, cert


@pytest.mark.timeout(180)
def test_tls_migration_verified_against_the_ca(hosts, tmp_path, tls_pair):
    b, cert = tls_pair
    a = hosts("a", extra=f"(xend-relocation-ssl-ca-file {cert})\n(xend-relocation-ssl-port "
                         f"{b.ssl_port})")
    create(a, tmp_path, "g1", memory=64, args="sim.dirty_rate=0")
    before = memory_digest(a.sim_state(), a.domid("g1"))
    r = a.xm("migrate", "--ssl", "-l", "g1", ORIGIN)      # port: xend-relocation-ssl-port
    assert r.returncode == 0, r.stderr + a.log_tail()
    assert_moved(a, b)
    assert memory_digest(b.sim_state(), b.domid("g1")) == before
    assert "NOT verified" not in a.log()


@pytest.mark.timeout(180)
def test_tls_by_default_and_wrong_ca_refused(hosts, tmp_path, tls_pair):
    b, _ = tls_pair
    _, other = openssl_cert(tmp_path, "other")
    a = hosts("a", extra=f"(xend-relocation-ssl yes)\n(xend-relocation-ssl-ca-file {other})")
    create(a, tmp_path, "g1", memory=32)
    r = migrate(a, "g1", b, port=b.ssl_port)               # no --ssl: the option decides
    assert r.returncode != 0
    assert "can't connect: certificate verification failed" in r.stderr, r.stderr
    assert_stayed(a, b)


@pytest.mark.timeout(180)
def test_tls_without_ca_works_and_says_so(hosts, tmp_path, tls_pair):
    b, _ = tls_pair
    a = hosts("a")
    create(a, tmp_path, "g1", memory=32)
    r = migrate(a, "g1", b, "--ssl", port=b.ssl_port)
    assert r.returncode == 0, r.stderr
    assert_moved(a, b)
    assert "certificate is NOT verified" in a.log()


# -- more ways in -----------------------------------------------------------------------------
@pytest.mark.timeout(180)
def test_change_home_server_moves_the_managed_entry(hosts, tmp_path):
    a, b = hosts("a"), hosts("b")
    from tests.relocation_helpers import write_domain_config
    cfg = write_domain_config(tmp_path, "g1", memory=32)
    assert a.xm("new", str(cfg)).returncode == 0
    assert a.xm("start", "g1").returncode == 0
    r = migrate(a, "g1", b, "-c")
    assert r.returncode == 0, r.stderr + a.log_tail()
    assert_moved(a, b)
    assert "g1" not in a.guests()                    # no halted managed entry left behind
    assert b.xm("destroy", "g1").returncode == 0
    assert b.guests().get("g1") is not None          # managed at b: listed, halted


@pytest.mark.timeout(180)
def test_local_migration_through_the_unix_relocation_socket(hosts, tmp_path):
    a = hosts("a", extra="(xend-unix-server yes)")
    create(a, tmp_path, "g1", memory=32, args="sim.dirty_rate=0")
    before = memory_digest(a.sim_state(), a.domid("g1"))
    old_id = a.domid("g1")
    sock = str(a.paths["xend-relocation-unix-path"])
    r = a.xm("migrate", "g1", sock)
    assert r.returncode == 0, r.stderr + a.log_tail()
    guests = a.guests()
    assert list(guests) == ["g1"] and running(guests["g1"])
    assert a.domid("g1") != old_id and a.sim_domids() == [a.domid("g1")]
    assert memory_digest(a.sim_state(), a.domid("g1")) == before


@pytest.mark.timeout(180)
def test_devices_added_after_start_travel_with_the_domain(hosts, tmp_path):
    """A disk and a vif attached to the running guest arrive with it, with their ids and
    uuids, connected at the destination (issue 17)."""
    from xend import sxp

    a, b = hosts("a"), hosts("b")
    create(a, tmp_path, "g1", vif=True)
    assert a.xm("block-attach", "g1", "phy:/dev/vg/g1-data", "xvdb", "w").returncode == 0
    assert a.xm("network-attach", "g1", "mac=00:16:3e:00:00:42").returncode == 0

    def devices(host):
        rec = sxp.from_string(host.xm("list", "-l", "g1").stdout)
        return sorted((d[1][0], dict(e for e in d[1][1:] if len(e) == 2).get("devid"),
                       dict(e for e in d[1][1:] if len(e) == 2).get("uuid"))
                      for d in rec[1:] if isinstance(d, list) and d[0] == "device")

    before = devices(a)
    r = migrate(a, "g1", b)
    assert r.returncode == 0, r.stdout + r.stderr + a.log_tail()
    assert_moved(a, b)
    assert devices(b) == before
    rows = b.xm("block-list", "g1").stdout.splitlines()[1:]
    assert [int(row.split()[0]) for row in rows] == [51728]
    assert all(row.split()[3] == "4" for row in rows)          # connected
    assert "00:16:3e:00:00:42" in b.xm("network-list", "g1").stdout
