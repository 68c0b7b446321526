"""Relocation pieces without a daemon: hosts-allow, the request/reply framing, the migration
tool's command lines and recovery order."""
from __future__ import annotations

import io
import logging
import socket
import threading
import time

import pytest
from hypothesis import given, strategies as st

from xend import errors
from xend.relocation import acl, protocol, tool
from xend.relocation.acl import HostsAllow, PeerName

pytestmark = pytest.mark.timeout(30)


# -- hosts-allow ----------------------------------------------------------------------------
def names(table):
    """A resolver from a dict ip -> PeerName (default: no name)."""
    return lambda ip: table.get(ip, PeerName(ip, False))


def allowed(spec, ip, table=None):
    return acl.check_peer(HostsAllow(spec), ip, names(table or {}))


def test_empty_allows_everybody():
    assert allowed("", "203.0.113.9")
    assert allowed("   ", "::1")
    assert HostsAllow("").allows_everybody


def test_regexes_are_fully_anchored_on_names():
    local = {"127.0.0.1": PeerName("localhost", True),
             "203.0.113.9": PeerName("localhost.attacker.example", True)}
    assert allowed("^localhost", "127.0.0.1", local)
    # the original's re.match admitted this one
    assert not allowed("^localhost", "203.0.113.9", local)
    assert not allowed("localhost", "203.0.113.9", local)
    assert allowed("localhost.*", "203.0.113.9", local)


def test_regexes_are_fully_anchored_on_addresses():
    assert allowed(r"^192\.0\.2\.1$", "192.0.2.1")
    assert not allowed(r"192\.0\.2\.1", "192.0.2.10")
    assert allowed(r"192\.0\.2\.1[0-9]", "192.0.2.10")


def test_addresses_and_cidr_blocks():
    spec = "10.1.0.0/16 192.0.2.7 fd00::/8"
    assert allowed(spec, "10.1.200.3")
    assert not allowed(spec, "10.2.0.1")
    assert allowed(spec, "192.0.2.7")
    assert not allowed(spec, "192.0.2.70")    # an address is not a prefix regex
    assert allowed(spec, "fd12::1")
    assert not allowed(spec, "fe80::1")
    assert allowed(spec, "::ffff:10.1.0.1")   # IPv4 seen through an IPv6 socket
    assert HostsAllow(spec).networks and not HostsAllow(spec).patterns


def test_unconfirmed_names_do_not_count():
    # a reverse zone the attacker controls says "localhost"; localhost does not resolve to it
    liar = {"203.0.113.9": PeerName("localhost", False)}
    assert not allowed("^localhost$", "203.0.113.9", liar)
    honest = {"203.0.113.9": PeerName("migrate.example.org", True)}
    assert allowed(r".*\.example\.org", "203.0.113.9", honest)


def test_mixed_words_any_match_admits():
    spec = r"10.0.0.0/8 ^host[0-9]+\.lan$"
    table = {"192.0.2.5": PeerName("host12.lan", True)}
    assert allowed(spec, "10.9.9.9", table)
    assert allowed(spec, "192.0.2.5", table)
    assert not allowed(spec, "192.0.2.6", table)


def test_rejection_is_logged_with_address_and_name(caplog):
    caplog.set_level(logging.INFO, logger="xend.relocate")
    table = {"192.0.2.6": PeerName("evil.example", True)}
    assert not allowed("^good$", "192.0.2.6", table)
    assert "Rejected connection from 192.0.2.6 (evil.example)." in caplog.text


def test_no_name_lookup_when_the_address_decides():
    calls = []

    def resolver(ip):
        calls.append(ip)
        return PeerName(ip, False)

    assert acl.check_peer(HostsAllow("10.0.0.0/8 ^x$"), "10.0.0.1", resolver)
    assert calls == []


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz.-0123456789", min_size=1, max_size=30))
def test_a_literal_name_admits_only_itself(name):
    pattern = name.replace(".", r"\.")
    assert acl.check_peer(HostsAllow(pattern), "192.0.2.1",
                          lambda ip: PeerName(name, True))
    assert not acl.check_peer(HostsAllow(pattern), "192.0.2.1",
                              lambda ip: PeerName(name + ".attacker.example", True))


def test_name_resolver_budget_and_cache():
    release = threading.Event()
    calls = []

    def slow(ip):
        calls.append(ip)
        release.wait(5)
        return PeerName("slow.example", True)

    r = acl.NameResolver(budget=0.2, lookup=slow)
    t0 = time.monotonic()
    assert r("192.0.2.1") == PeerName("192.0.2.1", False)
    assert time.monotonic() - t0 < 1.0
    release.set()

    fast = acl.NameResolver(budget=1.0, lookup=lambda ip: (calls.append(ip),
                                                             PeerName("n.example", True))[1])
    calls.clear()
    assert fast("192.0.2.2").fqdn == "n.example"
    assert fast("192.0.2.2").fqdn == "n.example"
    assert calls == ["192.0.2.2"]


def test_name_resolver_bounds_lookups_left_running():
    block = threading.Event()
    r = acl.NameResolver(budget=0.05, lookup=lambda ip: (block.wait(5), PeerName("x", True))[1],
                         max_pending=2)
    for i in range(4):
        assert not r(f"192.0.2.{i}").confirmed
    block.set()


def test_real_lookup_of_loopback_is_confirmed():
    name = acl.lookup_name_blocking("127.0.0.1")
    if name.fqdn == "127.0.0.1":
        pytest.skip("no name for 127.0.0.1 on this machine")
    assert name.confirmed


# -- protocol -------------------------------------------------------------------------------
def rfile(data: bytes) -> io.BufferedReader:
    return io.BufferedReader(io.BytesIO(data))


def test_requests_atoms_lists_and_several_per_line():
    assert protocol.read_values(rfile(b"receive\n"), 4096) == ["receive"]
    assert protocol.read_values(rfile(b"(help)\n"), 4096) == [["help"]]
    assert protocol.read_values(rfile(b"help quit\n"), 4096) == ["help", "quit"]
    # a value over several lines, blank and comment lines before it
    f = rfile(b"\n# hello\n(receive\n  )\nquit\n")
    assert protocol.read_values(f, 4096) == [["receive"]]
    assert protocol.read_values(f, 4096) == ["quit"]
    assert protocol.read_values(f, 4096) == []


def test_request_without_newline_at_end_of_stream():
    assert protocol.read_values(rfile(b"quit"), 4096) == ["quit"]
    with pytest.raises(protocol.ProtocolError, match="closed"):
        protocol.read_values(rfile(b"(receive"), 4096)


def test_requests_are_bounded():
    with pytest.raises(protocol.ProtocolError, match="longer than"):
        protocol.read_values(rfile(b"x" * 10000 + b"\n"), 4096)
    with pytest.raises(protocol.ProtocolError, match="longer than"):
        protocol.read_values(rfile(b"(" + b"a\n" * 5000), 4096)
    with pytest.raises(protocol.ProtocolError, match="bad request"):
        protocol.read_values(rfile(b")\n"), 4096)


def test_the_image_stream_follows_the_request_untouched():
    f = rfile(b"receive\nLinuxGuestRecord\x00\x00\x00\x05")
    assert protocol.read_values(f, 4096) == ["receive"]
    assert f.read() == b"LinuxGuestRecord\x00\x00\x00\x05"


def test_operation_names():
    assert protocol.operation("receive") == "receive"
    assert protocol.operation(["sslreceive"]) == "sslreceive"
    assert protocol.operation("xend.foo") == "xend_foo"
    assert protocol.operation([["x"]]) == ""
    assert protocol.request_name([["x"]]) == "((x))"


def test_replies_as_the_original_wrote_them():
    assert protocol.ok_reply() == b"(ok)\n"
    assert protocol.ready_reply("receive") == b"(ready receive)\n"
    assert protocol.ok_reply(list(protocol.OPERATIONS)) == \
        b"(ok (help quit receive sslreceive))\n"
    assert protocol.err_reply(errors.XendError("Restore failed")) == \
        b"(err (type \"<class 'xend.errors.XendError'>\") (value 'Restore failed'))\n"


def test_error_replies_round_trip():
    msg = "Not enough memory: it's 'really' short\n(2nd line)"
    reply = protocol.read_reply(rfile(protocol.err_reply(errors.VmError(msg))))
    err = protocol.remote_error(reply)
    assert err is not None and err.message == msg and "VmError" in err.kind
    with pytest.raises(protocol.RemoteError, match="really"):
        protocol.expect(reply, "ready")
    assert protocol.expect(protocol.read_reply(rfile(b"(ready receive)\n")), "ready")
    with pytest.raises(protocol.ProtocolError):
        protocol.expect(["ok"], "ready")
    with pytest.raises(protocol.ProtocolError):
        protocol.read_reply(rfile(b""))


def test_socket_reader_counts_and_honours_timeouts():
    a, b = socket.socketpair()
    with a, b:
        b.settimeout(0.2)
        f = protocol.reader(b)
        a.sendall(b"help\n")
        assert protocol.read_values(f, 4096) == ["help"]
        with pytest.raises(OSError):
            protocol.read_values(f, 4096)


# -- external-migration-tool ------------------------------------------------------------------
CONFIG = ["domain", ["name", "vm1"],
          ["device", ["vif", ["mac", "00:16:3e:00:00:01"]]],
          ["device", ["vfb", ["vnc", "1"]]],
          ["device", ["vbd", ["uname", "file:/x"], ["dev", "xvda"]]]]


def test_device_classes_in_order():
    assert tool.device_classes(CONFIG) == ["vif", "vfb", "vbd"]
    assert tool.device_classes(["domain"]) == []


def test_command_line_as_the_original():
    assert tool.tool_command("/etc/xen/scripts/external-device-migrate", "vif", 2, "host-b",
                             "vm1") == \
        "/etc/xen/scripts/external-device-migrate -type vif -step 2 -host host-b -domname vm1"
    assert tool.tool_command("t", "vbd", 1, "h", "vm1", recover=True).endswith(" -recover")
    assert tool.tool_command("t", "vbd", 1, "h; rm -rf /", "vm1") == \
        "t -type vbd -step 1 -host 'h; rm -rf /' -domname vm1"


def test_steps_skip_console_devices_and_recover_in_reverse():
    ran = []

    def runner(cmd):
        ran.append(cmd)
        return (3, "boom\n") if "-type vbd -step 2" in cmd and "-recover" not in cmd else (0, "")

    steps = tool.DeviceSteps("T", tool.device_classes(CONFIG), "h", "vm1", runner)
    steps.check()
    steps.step(1)
    with pytest.raises(errors.VmError, match="^Migration tool returned 3$"):
        steps.step(2)
    ran.clear()
    steps.recover()
    assert [c.split(" -host")[0] for c in ran] == [
        "T -type vif -step 2", "T -type vbd -step 1", "T -type vif -step 1",
        "T -type vbd -step 0", "T -type vif -step 0"]
    assert all(c.endswith("-recover") for c in ran)


def test_pci_refuses_and_no_tool_means_no_calls():
    with pytest.raises(errors.VmError, match="assigned PCI"):
        tool.DeviceSteps("T", ["pci"], "h", "d", lambda c: (0, "")).check()
    calls = []
    steps = tool.DeviceSteps("", ["vif", "vbd"], "h", "d", lambda c: (calls.append(c), (0, ""))[1])
    steps.check()
    steps.step(1)
    assert calls == []


def test_real_shell_run_logs_output(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="xend.relocate")
    script = tmp_path / "t.sh"
    script.write_text('#!/bin/sh\necho "args: $*"\n[ "$4" = 1 ] && exit 7\nexit 0\n')
    script.chmod(0o755)
    steps = tool.DeviceSteps(str(script), ["vif"], "dst", "vm1")
    steps.check()
    assert "migration tool: args: -type vif -step 0 -host dst -domname vm1" in caplog.text
    with pytest.raises(errors.VmError, match="returned 7"):
        steps.step(1)


# -- listener specs ----------------------------------------------------------------------------
from xend.relocation import listeners as rl  # noqa: E402


def test_bind_address_interface_names_and_literals():
    assert rl.bind_address("") == ""
    assert rl.bind_address("192.0.2.1") == "192.0.2.1"
    assert rl.bind_address("::1") == "::1"
    assert rl.bind_address("lo") == "127.0.0.1"             # SIOCGIFADDR
    assert rl.interface_address("nosuchif0") is None
    assert rl.bind_address("nosuchif0") == "nosuchif0"       # then a host name
    assert rl.bind_address("a-name-longer-than-ifnamsiz") == "a-name-longer-than-ifnamsiz"


class _Node:
    def __init__(self, opts):
        self.opts = opts
        self.domains = None


def _opts(tmp_path, **over):
    base = {"xend-relocation-server": False, "xend-relocation-ssl-server": False,
            "xend-unix-server": False, "xend-relocation-address": "",
            "xend-relocation-port": 8002, "xend-relocation-ssl-port": 8003,
            "xend-relocation-server-ssl-key-file": None,
            "xend-relocation-server-ssl-cert-file": None,
            "xend-relocation-server-ssl-ca-file": None, "xend-tcp-users-allow": [],
            "xend-relocation-unix-path": str(tmp_path / "relocation-socket"),
            "xend-relocation-hosts-allow": "", "xend-state-path": str(tmp_path / "state")}
    base.update({k.replace("_", "-"): v for k, v in over.items()})
    return base


def test_specs_follow_the_options(tmp_path):
    opts = _opts(tmp_path, xend_relocation_server=True, xend_relocation_address="lo",
                 xend_relocation_ssl_server=True, xend_unix_server=True,
                 xend_relocation_server_ssl_key_file="/k",
                 xend_relocation_server_ssl_cert_file="/c")
    specs = {s.name: s for s in rl.relocation_specs(opts, _Node(opts))}
    assert specs["RelocationServer-tcp"].endpoint == ("127.0.0.1", 8002)
    assert specs["RelocationServer-ssl"].endpoint == ("127.0.0.1", 8003)
    assert specs["RelocationServer-ssl"].key == (("127.0.0.1", 8003), "/k", "/c", None)
    assert specs["RelocationServer-unix"].endpoint == str(tmp_path / "relocation-socket")
    # hosts-allow is read per connection: it is not part of any key
    opts2 = dict(opts, **{"xend-relocation-hosts-allow": "^x$"})
    keys2 = {s.name: s.key for s in rl.relocation_specs(opts2, _Node(opts2))}
    assert keys2 == {n: s.key for n, s in specs.items()}
    assert rl.relocation_specs(_opts(tmp_path), _Node(_opts(tmp_path))) == []


def test_ssl_listener_needs_key_and_cert(tmp_path):
    from xend.server.listeners import ListenerError
    opts = _opts(tmp_path, xend_relocation_ssl_server=True)
    (spec,) = rl.relocation_specs(opts, _Node(opts))
    with pytest.raises(ListenerError, match="must both be set"):
        spec.make()


def test_tcp_listener_binds_and_closes(tmp_path):
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    number = port.getsockname()[1]
    port.close()
    opts = _opts(tmp_path, xend_relocation_server=True, xend_relocation_address="127.0.0.1",
                 xend_relocation_port=number)
    (spec,) = rl.relocation_specs(opts, _Node(opts))
    srv = spec.make()
    try:
        assert srv.server_address == ("127.0.0.1", number)
        assert not srv.socket.get_inheritable()
    finally:
        srv.server_close()


# -- journal and recovery ------------------------------------------------------------------------
from xend.relocation.journal import Journal  # noqa: E402
from xend.relocation.recovery import recover  # noqa: E402


class _Reg:
    def __init__(self, records):
        self.records = records
        self.calls = []

    def domains_with_state(self, detail, state, full):
        return self.records

    def domain_destroy(self, domid):
        self.calls.append(("destroy", domid))

    def domain_setName(self, domid, name):
        self.calls.append(("setName", domid, name))

    def domain_unpause(self, domid):
        self.calls.append(("unpause", domid))


def _rec(domid, uuid, name, state):
    return ["domain", ["domid", domid], ["uuid", uuid], ["name", name], ["state", state]]


U1, U2, U3, U4 = (f"0000000{i}-0000-0000-0000-000000000000" for i in range(1, 5))


def test_journal_round_trip_and_bad_names(tmp_path):
    j = Journal(str(tmp_path / "j"))
    assert j.entries() == []
    j.write("incoming", U1, name="g1", peer="192.0.2.1")
    j.write("outgoing", U2, name="g2", dst="h", phase="streaming")
    assert [(e["kind"], e["uuid"], e["name"]) for e in j.entries()] == [
        ("incoming", U1, "g1"), ("outgoing", U2, "g2")]
    j.remove("incoming", U1)
    j.remove("incoming", U1)
    assert [e["uuid"] for e in j.entries()] == [U2]
    with pytest.raises(ValueError):
        j.write("incoming", "../../etc/passwd")


def test_recovery_after_a_crash(tmp_path):
    j = Journal(str(tmp_path / "j"))
    j.write("incoming", U1, name="half", peer="p")           # never finished
    j.write("incoming", U2, name="done", peer="p")           # finished, entry not yet removed
    j.write("outgoing", U3, name="out", dst="d", phase="streaming")
    j.write("outgoing", U4, name="gone", dst="d", phase="confirmed")
    reg = _Reg([_rec(5, U1, "half", "--p---"), _rec(6, U2, "done", "-b----"),
                _rec(7, U3, "out", "--p---"), _rec(8, U4, "gone", "--p---")])
    recover(reg, j)
    assert reg.calls == [("destroy", 5), ("setName", 7, "out"), ("unpause", 7),
                         ("destroy", 8)]
    assert j.entries() == []


# -- the incoming stream guard -------------------------------------------------------------------
import struct  # noqa: E402

from xend.domains.image import MEMORY_MAGIC, max_section_bytes  # noqa: E402
from xend.relocation.receiver import IncomingStream  # noqa: E402


def image_head(cfg: bytes, nr_pages: int) -> bytes:
    return (b"LinuxGuestRecord" + struct.pack(">i", len(cfg)) + cfg
            + struct.pack(">8sIQ", MEMORY_MAGIC, 4096, nr_pages))


def drain(stream, chunk=7):
    while stream.read(chunk):
        pass


def test_config_is_handed_over_once_whatever_the_read_sizes():
    seen = []
    data = image_head(b"(domain (name g1) (uuid u-1))", 2) + b"\0" * 100
    drain(IncomingStream(io.BufferedReader(io.BytesIO(data)), seen.append), chunk=3)
    assert seen == [["domain", ["name", "g1"], ["uuid", "u-1"]]]


def test_refusal_from_the_config_callback_stops_the_read():
    def refuse(cfg):
        raise errors.VmError("VM name 'g1' already exists as domain 3")

    s = IncomingStream(io.BufferedReader(io.BytesIO(image_head(b"(domain)", 1))), refuse)
    with pytest.raises(errors.VmError, match="already exists"):
        drain(s)


def test_stream_length_bounded_by_the_domain_size():
    head = image_head(b"(domain)", 1)
    limit = len(head) - 20 + max_section_bytes(1)
    ok = IncomingStream(io.BufferedReader(io.BytesIO(head + b"\0" * (limit - len(head)))),
                        lambda c: None)
    drain(ok, chunk=65536)
    too_long = IncomingStream(io.BufferedReader(io.BytesIO(head + b"\0" * limit)),
                              lambda c: None)
    with pytest.raises(errors.VmError, match="longer than"):
        drain(too_long, chunk=65536)


def test_dripping_peer_is_cut_after_the_grace_period():
    now = [0.0]
    s = IncomingStream(io.BufferedReader(io.BytesIO(b"x" * 10_000_000)), lambda c: None,
                       clock=lambda: now[0])
    s.read(1000)
    now[0] = 119.0
    s.read(1000)                      # within the grace period: fine
    now[0] = 200.0
    with pytest.raises(errors.VmError, match="too slow"):
        s.read(1000)


def test_not_an_image_passes_through_for_the_reader_to_refuse():
    data = b"JUNKJUNKJUNKJUNKJUNKJUNK" * 10
    s = IncomingStream(io.BufferedReader(io.BytesIO(data)), lambda c: pytest.fail("called"))
    assert s.read(len(data)) == data
