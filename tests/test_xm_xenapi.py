"""``xm`` in Xen-API mode (xm-config.xml names a Xen-API server): the same list, info, create,
new, start, pause, shutdown and destroy checks as in legacy mode, with the same output."""
from __future__ import annotations

import re

import pytest

from tests.xenapi_helpers import XenAPIHost


@pytest.fixture
def host(xenapi_host):
    return xenapi_host


def xml_config(h: XenAPIHost, uri: str, user: str = "root", password: str = "") -> str:
    path = h.root / "xm-config.xml"
    path.write_text(f'<xm>\n  <server type="Xen-API" uri="{uri}" username="{user}" '
                    f'password="{password}"/>\n</xm>\n')
    return str(path)


def modes(h: XenAPIHost):
    """(name, env) for legacy mode and the two Xen-API transports."""
    unix = xml_config(h, "httpu://" + str(h.xenapi_path))
    tcp_path = h.root / "xm-config-tcp.xml"
    tcp_path.write_text(f'<xm><server type="Xen-API" uri="http://127.0.0.1:{h.port}/" '
                        'username="root" password=""/></xm>')
    return [("legacy", {}), ("xenapi-unix", {"XM_CONFIG_FILE": unix}),
            ("xenapi-tcp", {"XM_CONFIG_FILE": str(tcp_path)})]


def xm(h: XenAPIHost, env: dict, *args: str):
    import subprocess

    from tests.daemon_helpers import xm_command
    return subprocess.run(xm_command() + list(args), capture_output=True, text=True,
                          timeout=120, env=dict(h.env, **env))


def no_times(text: str) -> str:
    """xm list without its Time(s) column (cpu time moves between two runs), a guest that
    runs or waits (r/b: it changes from one moment to the next) shown as running."""
    text = re.sub(r"\s+[0-9]+\.[0-9]$", "", text, flags=re.M)
    return text.replace("-b----", "r-----")


@pytest.mark.timeout(240)
def test_the_same_list_create_shutdown_checks_in_both_modes(host):
    disk = 'disk = ["phy:/dev/vg/g,xvda,w"]\nvif = ["mac=00:16:3e:00:00:42"]\n'
    for mode, env in modes(host):
        name = "g-" + mode
        cfg = host.vm_config(name, memory=72, extra=disk)
        r = xm(host, env, "create", str(cfg))
        assert r.returncode == 0, (mode, r.stderr)
        assert re.fullmatch(rf'Using config file ".*"\.\nStarted domain {name} \(id=\d+\)\n',
                            r.stdout), (mode, r.stdout)
        listing = xm(host, env, "list")
        assert listing.returncode == 0, (mode, listing.stderr)
        rows = {line.split()[0]: line.split() for line in listing.stdout.splitlines()[1:]}
        assert rows[name][2:4] == ["72", "1"] and rows[name][4] in ("r-----", "-b----"), mode
        assert no_times(listing.stdout) == no_times(host.xm("list").stdout), mode
        r = xm(host, env, "pause", name)
        assert r.returncode == 0, (mode, r.stderr)
        assert xm(host, env, "list", name).stdout.splitlines()[1].split()[4] == "--p---", mode
        assert xm(host, env, "unpause", name).returncode == 0, mode
        r = xm(host, env, "shutdown", "-w", name)
        assert (r.returncode, r.stdout) == (0, f"Domain {name} terminated\n"
                                               "All domains terminated\n"), (mode, r.stderr)
        assert name not in xm(host, env, "list").stdout, mode
        r = xm(host, env, "shutdown", name)
        assert (r.returncode, r.stderr) == (3, f"Error: Domain '{name}' does not exist.\n"), mode


@pytest.mark.timeout(120)
def test_list_and_info_print_the_same_in_both_modes(host):
    assert host.xm("create", str(host.vm_config("same1"))).returncode == 0
    assert host.xm("new", str(host.vm_config("same2", memory=48))).returncode == 0
    legacy = {a: host.xm(*a).stdout for a in (("list",), ("list", "same2"), ("info",),
                                              ("list", "--state=running"))}
    for mode, env in modes(host)[1:]:
        for args, out in legacy.items():
            r = xm(host, env, *args)
            assert r.returncode == 0, (mode, args, r.stderr)
            if args[0] == "info":
                drop = re.compile(r"^free_memory .*$", re.M)
                assert drop.sub("", r.stdout) == drop.sub("", out), (mode, args)
            else:
                assert no_times(r.stdout) == no_times(out), (mode, args)


@pytest.mark.timeout(180)
def test_new_start_and_destroy_and_new_from_xenapi_xml(host):
    xmlcfg = host.root / "g.xml"
    xmlcfg.write_text(f"""<?xml version="1.0"?>
<xm>
  <vm is_a_template="false" auto_power_on="false" vcpus_max="2" vcpus_at_startup="1"
      actions_after_shutdown="destroy" actions_after_reboot="restart"
      actions_after_crash="destroy" PCI_bus="" pool_name="Pool-0" s3_integrity="1"
      superpages="0">
    <name><label>NAME</label><description>from XML</description></name>
    <version>1</version>
    <pv kernel="{host.kernel}" bootloader="" ramdisk="" args="root=/dev/xvda1 ro"
        bootloader_args=""/>
    <memory static_min="0" static_max="134217728" dynamic_min="100663296"
            dynamic_max="100663296"/>
    <vbd name="vbd0" vdi="vdi0" device="xvda" mode="RW" type="disk" bootable="1"
         qos_algorithm_type=""/>
    <vif name="vif0" mac="00:16:3e:00:00:07" mtu="1500" device="eth0" network="net0"
         qos_algorithm_type=""/>
    <console protocol="vt100"/>
    <other_config key="from" value="xml"/>
  </vm>
  <vdi name="vdi0" src="phy:/dev/vg/xml" type="system" size="0" sharable="false"
       read_only="false"><name><label>disk</label><description/></name></vdi>
  <network name="net0" default_gateway="" default_netmask="">
    <name><label>xenbr0</label><description/></name></network>
</xm>
""")
    for mode, env in modes(host):
        name = "x-" + mode
        path = host.root / f"{name}.xml"
        path.write_text(xmlcfg.read_text().replace("NAME", name))
        r = xm(host, env, "new", "-F", str(path))
        assert r.returncode == 0, (mode, r.stderr)
        assert xm(host, env, "list", name).stdout.splitlines()[1].split() == \
            [name, "96", "2", "0.0"], mode
        assert xm(host, env, "start", name).returncode == 0, mode
        row = xm(host, env, "list", name).stdout.splitlines()[1].split()
        assert row[2:4] == ["96", "1"] and row[4] in ("r-----", "-b----"), (mode, row)
        record = host.proxy().xend.domain(name, True)
        assert ["description", "from XML"] in record, mode
        devices = [d[1] for d in record if isinstance(d, list) and d[0] == "device"]
        assert any(d[0] == "vbd" and ["uname", "phy:/dev/vg/xml"] in d for d in devices)
        assert any(d[0] == "vif" and ["mac", "00:16:3e:00:00:07"] in d for d in devices)
        assert xm(host, env, "destroy", name).returncode == 0, mode
        assert xm(host, env, "list", name).stdout.splitlines()[1].split() == \
            [name, "96", "2", "0.0"], mode
        assert xm(host, env, "delete", name).returncode == 0, mode


@pytest.mark.timeout(60)
def test_bad_credentials_and_a_bad_xm_config_are_clear_errors(host):
    bad = host.root / "bad.xml"
    bad.write_text("<xm><server type='Xen-API' uri='http://127.0.0.1:1/'")
    r = xm(host, {"XM_CONFIG_FILE": str(bad)}, "list")
    assert r.returncode == 1 and r.stderr.startswith(f"Error: Invalid {bad}"), r.stderr
    r = xm(host, {"XM_CONFIG_FILE": str(host.root / "missing.xml")}, "list")
    assert r.returncode == 1 and "no such file" in r.stderr, r.stderr
    r = xm(host, {"XM_CONFIG_FILE": xml_config(host, "http://127.0.0.1:1/")}, "list")
    assert r.returncode == 1 and "Unable to connect to xend" in r.stderr, r.stderr
