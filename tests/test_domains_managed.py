"""Managed domains (§8.7): new/start/delete/suspend/resume, the store, xend restarts,
kill -9 during ``new``, autostart and on_xend_stop."""
from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from xend import sxp
from xend.errors import VMBadState, XendError
from xend.domains.store import ManagedStore

from tests.test_domains_support import REPO_ROOT_HINT, Env, child, names, vm
from tests.test_domains_support import env as shared_env

env = shared_env      # the fixture, shared by the domain test modules

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(autouse=True)
def logs(caplog):
    caplog.set_level(logging.DEBUG)


def stored(env, uuid):
    return sxp.parse_file(str(env.tmp / "domains" / uuid / "config.sxp"))[0]


# -- new, start, delete --------------------------------------------------------------------------
def test_new_stores_config_and_lists_halted(env):
    env.reg.domain_new(vm("m1", memory=96, on_xend_start="start"))
    rec = env.reg.domain("m1")
    uuid = child(rec, "uuid")
    assert child(rec, "domid") is None and child(rec, "state") is None
    assert child(rec, "status") == 0
    assert names(env.reg, "halted") == ["m1"]
    assert env.reg.domains(False) == ["Domain-0"]
    path = env.tmp / "domains" / uuid / "config.sxp"
    assert oct(os.stat(path.parent).st_mode & 0o777) == "0o700"
    text = path.read_text()
    assert all(len(line) <= 78 for line in text.splitlines() if line.strip().startswith("(")
               and not line.strip().startswith("(args"))
    value = stored(env, uuid)
    assert sxp.child_value(value, "name") == "m1" and sxp.child_value(value, "memory") == "96"
    assert [f for f in os.listdir(path.parent) if f != "config.sxp"] == []


def test_new_twice_with_same_uuid_updates(env):
    env.reg.domain_new(vm("m1", memory=64))
    uuid = child(env.reg.domain("m1"), "uuid")
    env.reg.domain_new(vm("m1", memory=128, uuid=uuid))
    assert child(env.reg.domain("m1"), "memory") == 128
    assert sxp.child_value(stored(env, uuid), "memory") == "128"
    with pytest.raises(XendError, match="VM name 'm1' already exists"):
        env.reg.domain_new(vm("m1"))


def test_start_and_delete(env):
    env.reg.domain_new(vm("m1"))
    env.reg.domain_start("m1")                 # start_paused defaults to True
    rec = env.reg.domain("m1")
    assert child(rec, "state") == "--p---"
    with pytest.raises(VMBadState) as e:
        env.reg.domain_start("m1")
    assert e.value.message == "Domain is already running"
    with pytest.raises(VMBadState) as e:
        env.reg.domain_delete("m1")
    assert e.value.message == "Domain is not halted."
    env.reg.domain_destroy("m1")
    assert names(env.reg, "halted") == ["m1"]
    uuid = child(env.reg.domain("m1"), "uuid")
    env.reg.domain_delete("m1")
    assert names(env.reg) == ["Domain-0"]
    assert not (env.tmp / "domains" / uuid).exists()


def test_start_unpaused(env):
    env.reg.domain_new(vm("m1"))
    env.reg.domain_start("m1", False)
    assert child(env.reg.domain("m1"), "status") == 2


def test_changes_to_managed_domain_are_saved(env):
    env.reg.domain_new(vm("m1", vcpus=2, maxmem=256))
    uuid = child(env.reg.domain("m1"), "uuid")
    env.reg.domain_start("m1", False)
    env.reg.domain_setMemoryTarget("m1", 100)
    env.reg.domain_pincpu("m1", 0, "1")
    env.reg.domain_sched_credit_set("m1", 700)
    value = stored(env, uuid)
    assert sxp.child_value(value, "memory") == "100"
    assert sxp.child_value(value, "cpu_weight") == "700"
    assert sxp.child_value(value, "cpus") == [["1"], []]


def test_create_with_managed_uuid_runs_the_managed_domain(env):
    env.reg.domain_new(vm("m1"))
    uuid = child(env.reg.domain("m1"), "uuid")
    env.reg.domain_create(vm("m1", uuid=uuid))
    assert names(env.reg) == ["Domain-0", "m1"]
    env.reg.domain_destroy("m1")
    assert names(env.reg, "halted") == ["m1"]        # still managed


# -- suspend / resume ----------------------------------------------------------------------------
def test_suspend_resume(env):
    env.reg.domain_new(vm("m1", memory=8))
    uuid = child(env.reg.domain("m1"), "uuid")
    env.reg.domain_start("m1", False)
    env.reg.domain_suspend("m1")
    chk = env.tmp / "domains" / uuid / "checkpoint.chk"
    assert chk.exists()
    assert child(env.reg.domain("m1"), "status") == 3
    assert names(env.reg, "suspended") == ["m1"]
    with pytest.raises(VMBadState, match="Domain is already running"):
        env.reg.domain_start("m1")
    with pytest.raises(VMBadState, match="Domain is not halted."):
        env.reg.domain_delete("m1")
    env.reg.domain_resume("m1")
    assert not chk.exists()
    assert child(env.reg.domain("m1"), "status") == 2
    with pytest.raises(XendError) as e:
        env.reg.domain_resume("m1")
    assert e.value.message == ("Error occurred when resuming: Cannot resume domain that is "
                               "not suspended.")


def test_suspend_survives_xend_restart_and_resumes_paused(env):
    env.reg.domain_new(vm("m1", memory=8))
    env.reg.domain_start("m1", False)
    env.reg.domain_suspend("m1")
    env.restart()
    assert names(env.reg, "suspended") == ["m1"]
    env.reg.domain_resume("m1", True)
    assert child(env.reg.domain("m1"), "status") == 1


def test_suspend_of_unmanaged_domain_refused(env):
    rec = env.reg.domain_create(vm("g1"))
    env.reg.domain_unpause(child(rec, "domid"))
    with pytest.raises(XendError) as e:
        env.reg.domain_suspend("g1")
    assert e.value.message == "Domain is not managed by Xend lifecycle support."
    env.reg.domain_pause("g1")
    with pytest.raises(VMBadState, match="Domain is not running"):
        env.reg.domain_suspend("g1")


# -- persistence across xend restarts -------------------------------------------------------------
def test_managed_domains_survive_restart(env):
    env.reg.domain_new(vm("m1", memory=64))
    env.reg.domain_new(vm("m2", memory=32))
    env.reg.domain_start("m2", False)
    running = child(env.reg.domain("m2"), "domid")
    env.restart()
    assert names(env.reg) == ["Domain-0", "m1", "m2"]
    assert child(env.reg.domain("m2"), "domid") == running
    env.reg.domain_destroy("m2")
    assert names(env.reg, "halted") == ["m1", "m2"]      # m2 is still managed


def test_bad_stored_files_are_skipped_with_the_original_messages(env, caplog):
    env.reg.domain_new(vm("good"))
    store = env.tmp / "domains"
    wrong = store / "11111111-1111-1111-1111-111111111111"
    wrong.mkdir()
    (wrong / "config.sxp").write_text("(domain (name other) (uuid "
                                      "22222222-2222-2222-2222-222222222222) (memory 64))\n")
    broken = store / "33333333-3333-3333-3333-333333333333"
    broken.mkdir()
    (broken / "config.sxp").write_text("(domain (name broken (memory 64)\n")
    invalid = store / "44444444-4444-4444-4444-444444444444"
    invalid.mkdir()
    (invalid / "config.sxp").write_text("(domain (name inv) (uuid "
                                        "44444444-4444-4444-4444-444444444444) (memory 0))\n")
    (store / "55555555-5555-5555-5555-555555555555").mkdir()     # no config at all
    env.restart()
    assert names(env.reg) == ["Domain-0", "good"]
    assert f"UUID mismatch in stored configuration: {wrong}/config.sxp" in caplog.text
    assert f"Unable to open or parse config.sxp: {broken}/config.sxp" in caplog.text
    assert f"Unable to open or parse config.sxp: {invalid}/config.sxp" in caplog.text


def test_stale_temp_files_are_removed(env):
    env.reg.domain_new(vm("m1"))
    uuid = child(env.reg.domain("m1"), "uuid")
    junk = env.tmp / "domains" / uuid / ".config.sxp.abc123.tmp"
    junk.write_text("(domain (na")
    env.restart()
    assert not junk.exists() and names(env.reg) == ["Domain-0", "m1"]


def test_atomic_save_leaves_old_file_when_writing_fails(tmp_path, monkeypatch):
    store = ManagedStore(str(tmp_path))
    uuid = "66666666-6666-6666-6666-666666666666"
    store.save(uuid, ["domain", ["name", "old"], ["uuid", uuid]])

    def boom(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        store.save(uuid, ["domain", ["name", "new"], ["uuid", uuid]])
    monkeypatch.undo()
    assert sxp.parse_file(store.config_path(uuid))[0][1] == ["name", "old"]
    assert os.listdir(store.domain_dir(uuid)) == ["config.sxp"]


KILL_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from tests.test_domains_support import make_opts, vm
    from pathlib import Path
    from xend.hypervisor import make_hypervisor
    from xend.domains.registry import DomainRegistry
    opts = make_opts(Path({tmp!r}))
    reg = DomainRegistry(opts, make_hypervisor(opts))
    reg.start()
    uuid = {uuid!r}
    devices = [["device", ["vbd", ["uname", "phy:/dev/vg/disk%d" % i], ["dev", "xvd%d" % i],
                               ["mode", "w"]]] for i in range(200)]
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        reg.domain_new(vm("victim", memory=n % 1000 + 1, uuid=uuid) + devices)
""")


def test_kill_9_during_new_leaves_old_or_new_config(tmp_path):
    """``new`` run in a loop in another process, SIGKILLed at random moments: a fresh
    registry always finds a whole config, never a torn one."""
    uuid = "77777777-7777-7777-7777-777777777777"
    e = Env(tmp_path)
    e.reg.domain_new(vm("victim", memory=1, uuid=uuid))
    e.close()
    rng = random.Random(1234)
    script = KILL_SCRIPT.format(root=REPO_ROOT_HINT, tmp=str(tmp_path), uuid=uuid)
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready", proc.stderr.read()
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        e.open()
        try:
            rec = e.reg.domain("victim")
            assert 1 <= child(rec, "memory") <= 1000
            assert len([d for d in rec[1:] if d[0] == "device"]) in (0, 200)
            directory = tmp_path / "domains" / uuid
            assert os.listdir(directory) == ["config.sxp"]        # temps cleaned
        finally:
            e.close()


# -- xend start and stop -------------------------------------------------------------------------
def test_autostart(env):
    env.reg.domain_new(vm("auto", on_xend_start="start"))
    env.reg.domain_new(vm("manual"))
    env.restart()
    env.reg.autostart()
    assert names(env.reg, "running") == ["Domain-0", "auto"]
    assert names(env.reg, "halted") == ["manual"]
    env.reg.autostart()                       # again (reload): harmless
    assert names(env.reg, "running") == ["Domain-0", "auto"]


def test_on_xend_stop(env):
    env.reg.domain_new(vm("sd", on_xend_stop="shutdown", args="sim.ignore_shutdown=1"))
    env.reg.domain_new(vm("su", memory=8, on_xend_stop="suspend"))
    env.reg.domain_new(vm("ig"))
    for n in ("sd", "su", "ig"):
        env.reg.domain_start(n, False)
    sd = child(env.reg.domain("sd"), "domid")
    env.close(run_stop_actions=True)
    env.open()
    assert env.hv.store_read(f"/local/domain/{sd}/control/shutdown") == "poweroff"
    assert names(env.reg, "suspended") == ["su"]
    assert names(env.reg, "running") == ["Domain-0", "ig", "sd"]


def test_stop_without_stop_actions_on_reload(env):
    env.reg.domain_new(vm("su", memory=8, on_xend_stop="suspend"))
    env.reg.domain_start("su", False)
    env.reg.reconfigure(env.opts)
    env.restart()                              # no on_xend_stop: not a real stop
    assert names(env.reg, "running") == ["Domain-0", "su"]
