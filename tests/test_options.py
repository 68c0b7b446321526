"""xend-config.sxp options: the table, the original's reading rules, validation at load."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from xend import options, sxp
from xend.errors import ConfigError
from xend.options import load_options, parse_options

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "etc" / "xen" / "xend-config.sxp"

# The defaults of Xen 4.4's XendOptions (reference §1.3), written out independently of the table.
ORIGINAL_DEFAULTS = {
    "logfile": "/var/log/xen/xend.log",
    "loglevel": "DEBUG",
    "xend-http-server": False,
    "xend-unix-server": False,
    "xend-unix-path": "/var/lib/xend/xend-socket",
    "xend-port": 8000,
    "xend-address": "",
    "xend-tcp-xmlrpc-server": False,
    "xend-tcp-xmlrpc-server-address": "localhost",
    "xend-tcp-xmlrpc-server-port": 8006,
    "xend-tcp-xmlrpc-server-ssl-key-file": None,
    "xend-tcp-xmlrpc-server-ssl-cert-file": None,
    "xend-unix-xmlrpc-server": True,
    "xen-api-server": [["unix"]],
    "xend-relocation-server": False,
    "xend-relocation-port": 8002,
    "xend-relocation-address": "",
    "xend-relocation-hosts-allow": "",
    "xend-relocation-ssl-server": False,
    "xend-relocation-ssl-port": 8003,
    "xend-relocation-server-ssl-key-file": None,
    "xend-relocation-server-ssl-cert-file": None,
    "xend-relocation-ssl": False,
    "xend-udev-event-server": False,
    "external-migration-tool": "",
    "network-script": None,
    "vif-script": "vif-bridge",
    "dom0-min-mem": 0,
    "enable-dom0-ballooning": False,        # because dom0-min-mem is 0
    "total_available_memory": 0,
    "dom0-cpus": 0,
    "console-limit": 1024,
    "enable-dump": False,
    "vnc-listen": "127.0.0.1",
    "vncpasswd": None,
    "vnc-tls": False,
    "vnc-x509-cert-dir": "/etc/xen/vnc",
    "vnc-x509-verify": False,
    "keymap": None,
    "xend-domains-path": "/var/lib/xend/domains",
    "xend-state-path": "/var/lib/xend/state",
    "xend-storage-path": "/var/lib/xend/storage",
    "xend-security-path": "/var/lib/xend/security",
    "resource-label-change-script": None,
    "xsm_module_name": "dummy",
    "qemu-dm-logrotate-count": 10,
    "device-create-timeout": 100,
    "device-destroy-timeout": 100,
    "pci-passthrough-strict-check": True,
    "pscsi-device-mask": ["*"],
}
ADDED_DEFAULTS = {
    "xend-pid-file": "/var/run/xend.pid",
    "xend-debug-logfile": "/var/log/xen/xend-debug.log",
    "xend-unix-xmlrpc-path": "/var/run/xend/xmlrpc.sock",
    "xen-api-unix-path": "/var/run/xend/xen-api.sock",
    "xend-relocation-unix-path": "/var/lib/xend/relocation-socket",
    "xend-relocation-ssl-ca-file": None,
    "xend-tcp-xmlrpc-server-ssl-ca-file": None,
    "xend-relocation-server-ssl-ca-file": None,
    "xend-tcp-users-allow": [],
    "xend-dump-path": "/var/xen/dump",
    "xend-scripts-path": "/etc/xen/scripts",
    "hypervisor-backend": "auto",
    "simulated-state-path": "/var/lib/xend/simulated",
    "simulated-host-memory": 16384,
    "simulated-host-cpus": 0,
    "simulated-dom0-memory": 0,
    "simulated-scheduler": "credit",
}
ALL_DEFAULTS = {**ORIGINAL_DEFAULTS, **ADDED_DEFAULTS}


def write(tmp_path: Path, text: str, name: str = "xend-config.sxp") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="latin-1")
    return str(path)


def problems_of(tmp_path: Path, text: str) -> list:
    with pytest.raises(ConfigError) as info:
        load_options(write(tmp_path, text))
    return info.value.problems


# -- the table --------------------------------------------------------------------------------------
def test_the_table_has_the_50_options_of_xen_4_4_and_our_additions():
    assert len(options.ORIGINAL_NAMES) == 50
    assert set(options.ORIGINAL_NAMES) == set(ORIGINAL_DEFAULTS)
    assert set(options.ADDED_NAMES) == set(ADDED_DEFAULTS)


def test_every_option_has_a_help_text():
    for opt in options.OPTIONS:
        assert opt.help.strip().endswith("."), opt.name


def test_defaults_are_the_originals():
    opts = options.defaults()
    assert dict(opts.items()) == ALL_DEFAULTS
    assert all(opts.source(name) == "default" for name in opts)
    assert opts.warnings == [] and opts.path is None


# -- locating the file ----------------------------------------------------------------------------
def test_config_path_explicit_then_environment_then_etc():
    assert options.config_path("/x.sxp", {"XEND_CONFIG": "/env.sxp"}) == "/x.sxp"
    assert options.config_path(None, {"XEND_CONFIG": "/env.sxp"}) == "/env.sxp"
    assert options.config_path(None, {}) == "/etc/xen/xend-config.sxp"


def test_xend_config_environment_variable_is_read(tmp_path):
    path = write(tmp_path, "(xend-port 8123)")
    opts = load_options(environ={"XEND_CONFIG": path})
    assert opts["xend-port"] == 8123 and opts.path == path


def test_missing_file_gives_defaults_and_the_originals_warning(tmp_path):
    path = str(tmp_path / "nope.sxp")
    opts = load_options(path)
    assert dict(opts.items()) == ALL_DEFAULTS
    assert opts.warnings == [f"Config file does not exist: {path}"]
    assert opts.path == path


def test_unreadable_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_options(str(tmp_path))        # a directory
    assert info.value.problems[0].startswith(f"{tmp_path}: cannot read config file")


def test_empty_and_comment_only_files_give_defaults(tmp_path):
    assert dict(load_options(write(tmp_path, "")).items()) == ALL_DEFAULTS
    assert dict(load_options(write(tmp_path, "# nothing\n\n")).items()) == ALL_DEFAULTS


# -- the real files -----------------------------------------------------------------------------
LOCALHOST = r"^localhost$ ^localhost\.localdomain$"
BRIDGE = ["/etc/xen/scripts/network-bridge"]
V302 = {"xend-relocation-server": True, "xend-relocation-hosts-allow": "^localhost$",
        "network-script": BRIDGE, "dom0-min-mem": 196, "enable-dom0-ballooning": True}
V303 = {**V302, "xend-relocation-hosts-allow": LOCALHOST}
V304 = {**V303, "vncpasswd": ""}
FEDORA = {**V304, "xend-unix-server": True, "xend-relocation-server": False,
          "network-script": ["/bin/true"], "dom0-min-mem": 256}
# What the original xend would use for each file: only the options that differ from the defaults.
EXPECTED = {
    "xend-config-3.0.0.sxp": {"xend-http-server": True, "xend-relocation-server": True,
                              "xend-address": "localhost", "xend-relocation-address": "localhost",
                              "network-script": BRIDGE, "dom0-min-mem": 196,
                              "enable-dom0-ballooning": True},
    "xend-config-3.0.2.sxp": V302,
    "xend-config-3.0.3.sxp": V303,
    "xend-config-3.0.4.sxp": V304,
    "xend-config-3.1.0.sxp": V304,
    "xend-config-3.2.0-rc6.sxp": V304,
    "xend-config-3.3.0.sxp": V304,
    "xend-config-3.4.0-rc3.sxp": V304,
    "xend-config-3.4.0-rc3-fedora-patch-via-pld.sxp": FEDORA,
    "xend-config-4.0.0.sxp": V304,
    "xend-config-4.1.0.sxp": V304,
    "xend-config-4.1.2-fedora-patch-via-pld.sxp": FEDORA,
    "xend-config-4.4.0.sxp": V304,
    "xend-config-unittest-4.1.0.sxp": V303,
    "xend-config-xenapi-3.2.0-rc6.sxp": {**V304, "xen-api-server": [["9363", "none"]]},
    "xend-config-debian-acmlug.sxp": {
        "network-script": BRIDGE, "enable-dom0-ballooning": True, "dom0-cpus": 1,
        "vncpasswd": "", "xend-relocation-server": True,
        "xend-relocation-hosts-allow": r"^192\.0\.100\.[0-9]+$"},
    "xend-config-debian-trimet.sxp": {"dom0-min-mem": 2048, "vncpasswd": ""},
    "xend-config-debianish-animux.sxp": {
        "network-script": ["/etc/xen/scripts/network-dummy"], "dom0-min-mem": 196,
        "enable-dom0-ballooning": True, "vncpasswd": ""},
    # (network-script ) is empty on purpose (YaST manages the bridges): the default, none.
    "xend-config-suse-4.1.2.sxp": {"xend-unix-server": True, "xend-relocation-hosts-allow": LOCALHOST,
                                   "dom0-min-mem": 512, "enable-dom0-ballooning": True,
                                   "vncpasswd": ""},
    "xend-config-user-nesousx.sxp": {"xend-unix-server": True, "dom0-min-mem": 196,
                                     "vncpasswd": ""},
}


def test_every_real_file_has_an_expectation(shared_fixtures):
    names = {p.name for p in (shared_fixtures / "xend-config").glob("*.sxp")}
    assert names == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_file_gives_what_the_original_would_use(shared_fixtures, name):
    path = shared_fixtures / "xend-config" / name
    opts = load_options(str(path))
    assert opts.warnings == []
    assert dict(opts.items()) == {**ALL_DEFAULTS, **EXPECTED[name]}
    # Every value that came from the file points at the line that set it.
    lines = path.read_text(encoding="latin-1").splitlines()
    for option in opts:
        src = opts.source(option)
        if src != "default":
            file, line = src.rsplit(":", 1)
            assert file == str(path)
            assert lines[int(line) - 1].lstrip().startswith("(" + option), (option, src)


def test_real_file_sources_for_4_4(shared_fixtures):
    path = str(shared_fixtures / "xend-config" / "xend-config-4.4.0.sxp")
    opts = load_options(path)
    assert opts.source("xend-relocation-server") == f"{path}:65"
    assert opts.source("vncpasswd") == f"{path}:239"
    assert opts.source("xend-port") == "default"


# -- reading rules ------------------------------------------------------------------------------------
def test_first_occurrence_wins_and_later_ones_are_reported(tmp_path):
    path = write(tmp_path, "(xend-port 8001)\n(xend-port 8002)\n(xend-port bad)\n")
    opts = load_options(path)
    assert opts["xend-port"] == 8001
    assert opts.source("xend-port") == f"{path}:1"
    assert opts.warnings == [
        f"{path}:2: option xend-port given again and ignored: the first one, at {path}:1, is used",
        f"{path}:3: option xend-port given again and ignored: the first one, at {path}:1, is used"]


def test_empty_form_means_default_and_still_counts_as_the_first(tmp_path):
    opts = load_options(write(tmp_path, "(xend-port)\n(xend-port 9000)\n"))
    assert opts["xend-port"] == 8000
    assert opts.source("xend-port") == "default"


def test_extra_values_are_ignored_with_a_warning(tmp_path):
    path = write(tmp_path, "(network-script network-bridge netdev=eth1)\n")
    opts = load_options(path)
    assert opts["network-script"] == ["/etc/xen/scripts/network-bridge"]
    assert opts.warnings == [f"{path}:1: option network-script: extra values after "
                             "network-bridge ignored (quote a value containing spaces)"]


def test_nested_list_values(tmp_path):
    opts = load_options(write(tmp_path, "(xen-api-server ((9363 pam '^localhost$') (unix none)))\n"
                                        "(pscsi-device-mask ('16:0:0:0' '15:0'))\n"))
    assert opts["xen-api-server"] == [["9363", "pam", "^localhost$"], ["unix", "none"]]
    assert opts["pscsi-device-mask"] == ["16:0:0:0", "15:0"]


def test_unknown_option_is_a_warning_with_the_closest_name(tmp_path):
    path = write(tmp_path, "(xend-relocation-server yes)\n\n(xend-relocaton-port 8010)\n"
                           "(completely-different 1)\n(xsm-module-name flask)\n")
    opts = load_options(path)
    assert opts["xend-relocation-port"] == 8002
    assert opts.warnings == [
        f"{path}:3: unknown option 'xend-relocaton-port' ignored "
        "(did you mean xend-relocation-port?)",
        f"{path}:4: unknown option 'completely-different' ignored",
        f"{path}:5: unknown option 'xsm-module-name' ignored (did you mean xsm_module_name?)"]


def test_non_list_top_level_atom_is_a_warning_and_loading_goes_on(tmp_path):
    # Decision: the original ignored such atoms silently, so files that ran keep running;
    # the warning points at the usual cause, forgotten parentheses.
    path = write(tmp_path, "# header\nxend-port 8100\n(dom0-cpus 2)\n'quoted'\n")
    opts = load_options(path)
    assert opts["xend-port"] == 8000 and opts["dom0-cpus"] == 2
    assert opts.warnings == [
        f"{path}:2: xend-port is not an option (NAME VALUE) and is ignored",
        f"{path}:2: 8100 is not an option (NAME VALUE) and is ignored",
        f"{path}:4: quoted is not an option (NAME VALUE) and is ignored"]


def test_forms_without_a_name_are_warnings(tmp_path):
    path = write(tmp_path, "()\n((a b))\n")
    opts = load_options(path)
    assert opts.warnings == [f"{path}:1: () has no option name and is ignored",
                             f"{path}:2: ((a b)) has no option name and is ignored"]


def test_utf8_values_are_decoded(tmp_path):
    path = tmp_path / "c.sxp"
    path.write_bytes("# “quotes” in a comment\n(vncpasswd 'pässwörd')\n".encode("utf-8"))
    assert load_options(str(path))["vncpasswd"] == "pässwörd"


# -- min-mem -----------------------------------------------------------------------------------------
def test_min_mem_is_read_as_dom0_min_mem_with_a_warning(tmp_path):
    path = write(tmp_path, "(min-mem 300)\n")
    opts = load_options(path)
    assert opts["dom0-min-mem"] == 300
    assert opts["enable-dom0-ballooning"] is True
    assert opts.source("dom0-min-mem") == f"{path}:1"
    assert opts.warnings == [f"{path}:1: option min-mem is not a xend option; read as "
                             "dom0-min-mem (write dom0-min-mem instead)"]


@pytest.mark.parametrize("text", ["(min-mem 300)\n(dom0-min-mem 200)\n",
                                  "(dom0-min-mem 200)\n(min-mem 300)\n"])
def test_dom0_min_mem_wins_over_min_mem_wherever_it_is(tmp_path, text):
    path = write(tmp_path, text)
    opts = load_options(path)
    assert opts["dom0-min-mem"] == 200
    line = 1 if text.startswith("(min-mem") else 2
    other = 3 - line
    assert opts.warnings == [f"{path}:{line}: option min-mem is not a xend option and is "
                             f"ignored: dom0-min-mem is set at {path}:{other}"]


def test_bad_min_mem_is_an_error_naming_it(tmp_path):
    path = write(tmp_path, "(min-mem lots)\n")
    assert problems_of(tmp_path, "(min-mem lots)\n") == [
        f"{path}:1: option dom0-min-mem: expected int >= 0, got lots"]


# -- validation at load --------------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0x10", "1.5", "8000k", "''", "eight", "1_000", "(8000)"])
def test_bad_int(tmp_path, value):
    path = write(tmp_path, f"(xend-port {value})\n")
    shown = sxp.to_string(sxp.from_string(value))
    assert problems_of(tmp_path, f"(xend-port {value})\n") == [
        f"{path}:1: option xend-port: expected port (0-65535), got {shown}"]


@pytest.mark.parametrize("value, expected", [("8000", 8000), ("+8001", 8001), ("' 8002 '", 8002),
                                             ("0", 0), ("065535", 65535)])
def test_good_int(tmp_path, value, expected):
    assert load_options(write(tmp_path, f"(xend-port {value})"))["xend-port"] == expected


def test_int_ranges(tmp_path):
    path = write(tmp_path, "(xend-port 65536)\n(dom0-cpus -1)\n(dom0-min-mem -5)")
    assert problems_of(tmp_path, "(xend-port 65536)\n(dom0-cpus -1)\n(dom0-min-mem -5)") == [
        f"{path}:1: option xend-port: expected port (0-65535), got 65536",
        f"{path}:2: option dom0-cpus: expected int >= 0, got -1",
        f"{path}:3: option dom0-min-mem: expected int >= 0, got -5"]


@pytest.mark.parametrize("word", ["yes", "Y", "1", "ON", "true", "t"])
def test_bool_true_words(tmp_path, word):
    assert load_options(write(tmp_path, f"(enable-dump {word})"))["enable-dump"] is True


@pytest.mark.parametrize("word", ["no", "N", "0", "Off", "FALSE", "f"])
def test_bool_false_words(tmp_path, word):
    assert load_options(write(tmp_path, f"(xend-unix-xmlrpc-server {word})")
                        )["xend-unix-xmlrpc-server"] is False


@pytest.mark.parametrize("value", ["maybe", "2", "''", "(yes)", "enabled"])
def test_bad_bool(tmp_path, value):
    path = write(tmp_path, f"(enable-dump {value})")
    shown = sxp.to_string(sxp.from_string(value))
    assert problems_of(tmp_path, f"(enable-dump {value})") == [
        f"{path}:1: option enable-dump: expected bool, got {shown}"]


def test_enums(tmp_path):
    opts = load_options(write(tmp_path, "(loglevel info)\n(xsm_module_name FLASK)\n"
                                        "(hypervisor-backend simulated)\n"))
    assert (opts["loglevel"], opts["xsm_module_name"], opts["hypervisor-backend"]) == \
        ("INFO", "flask", "simulated")
    path = write(tmp_path, "(loglevel LOUD)\n(hypervisor-backend kvm)\n")
    assert problems_of(tmp_path, "(loglevel LOUD)\n(hypervisor-backend kvm)\n") == [
        f"{path}:1: option loglevel: expected one of TRACE DEBUG INFO WARNING ERROR CRITICAL, "
        "got LOUD",
        f"{path}:2: option hypervisor-backend: expected one of auto xenctrl simulated, got kvm"]


def test_string_options_refuse_lists_and_paths_refuse_empty(tmp_path):
    path = write(tmp_path, "(xend-address (a b))\n(logfile '')\n")
    assert problems_of(tmp_path, "(xend-address (a b))\n(logfile '')\n") == [
        f"{path}:1: option xend-address: expected string, got (a b)",
        f"{path}:2: option logfile: expected path, got ''"]


def test_list_options_refuse_atoms_and_bad_entries(tmp_path):
    text = "(xen-api-server unix)\n(pscsi-device-mask ((a)))\n(xen-api-server ((unix)))\n"
    path = write(tmp_path, text)
    assert problems_of(tmp_path, text) == [
        f"{path}:1: option xen-api-server: expected list of (WHERE [AUTH [HOSTS [KEY CERT]]]) "
        "entries, got unix",
        f"{path}:2: option pscsi-device-mask: expected list of strings, got ((a)) "
        "(entry (a) is not a string)"]


def test_hosts_allow_regexes_are_checked(tmp_path):
    text = "(xend-relocation-hosts-allow '^ok$ ^bad(')\n"
    path = write(tmp_path, text)
    [problem] = problems_of(tmp_path, text)
    assert problem.startswith(f"{path}:1: option xend-relocation-hosts-allow: expected "
                              "space-separated regular expressions, got '^ok$ ^bad(' (^bad(: ")


def test_all_errors_are_reported_in_file_order(tmp_path):
    text = ("(xend-relocation-port 8002x)\n"
            "(xend-relocaton-port 8003)\n"
            "(enable-dump perhaps)\n"
            "(dom0-cpus two)\n"
            "(network-script (a b))\n"
            "(loglevel verbose)\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_options(path)
    assert info.value.problems == [
        f"{path}:1: option xend-relocation-port: expected port (0-65535), got 8002x",
        f"{path}:3: option enable-dump: expected bool, got perhaps",
        f"{path}:4: option dom0-cpus: expected int >= 0, got two",
        f"{path}:5: option network-script: expected script, got (a b)",
        f"{path}:6: option loglevel: expected one of TRACE DEBUG INFO WARNING ERROR CRITICAL, "
        "got verbose"]
    assert str(info.value) == "\n".join(info.value.problems)
    # The warnings found on the way are kept for check-config.
    assert info.value.warnings == [f"{path}:2: unknown option 'xend-relocaton-port' ignored "
                                   "(did you mean xend-relocation-port?)"]


@pytest.mark.parametrize("text, line, column, message", [
    ("(xend-port 8000)\n(logfile /x.log\n", 2, 1, "unexpected EOF"),
    ("(xend-port 8000))\n", 1, 17, "syntax error: )"),
    ("(a b)\n(vncpasswd 'oops)\n", 2, 12, "unexpected EOF"),
    ("(dom0-cpus \x01)\n", 1, 12, "invalid character: code 1"),
])
def test_syntax_errors_name_file_line_and_column(tmp_path, text, line, column, message):
    path = write(tmp_path, text)
    [problem] = problems_of(tmp_path, text)
    assert problem.startswith(f"{path}:{line}:{column}: {message}")


# -- special options ----------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("", False), ("(dom0-min-mem 0)", False), ("(dom0-min-mem 196)", True),
    ("(dom0-min-mem 196)(enable-dom0-ballooning no)", False),
    ("(enable-dom0-ballooning yes)", True),
])
def test_enable_dom0_ballooning_default_follows_dom0_min_mem(tmp_path, text, expected):
    assert load_options(write(tmp_path, text))["enable-dom0-ballooning"] is expected


def test_total_available_memory_is_zero_without_ballooning(tmp_path):
    path = write(tmp_path, "(enable-dom0-ballooning no)\n(total_available_memory 8)\n")
    opts = load_options(path)
    assert opts["total_available_memory"] == 0
    assert opts.warnings == [f"{path}:2: option total_available_memory: 8 ignored (0 used) "
                             "because enable-dom0-ballooning is off"]
    opts = load_options(write(tmp_path, "(dom0-min-mem 1)\n(total_available_memory 8)\n"))
    assert opts["total_available_memory"] == 8


@pytest.mark.parametrize("value, on, warned", [
    ("1", True, False), ("yes", True, False), ("0", True, True), ("no", True, True),
    ("''", False, False), ("anything", True, False)])
def test_vnc_tls_any_non_empty_value_turns_it_on(tmp_path, value, on, warned):
    path = write(tmp_path, f"(vnc-tls {value})\n(vnc-x509-verify {value})\n")
    opts = load_options(path)
    assert opts["vnc-tls"] is on and opts["vnc-x509-verify"] is on
    assert len(opts.warnings) == (2 if warned else 0)
    if warned:
        assert opts.warnings[0].startswith(f"{path}:1: option vnc-tls: {value} turns it ON")


def test_vnc_tls_absent_or_empty_form_is_off(tmp_path):
    assert load_options(write(tmp_path, "(vnc-tls)"))["vnc-tls"] is False


def test_file_options_bare_names_are_looked_up_in_etc_xen(tmp_path):
    text = "(xend-relocation-server-ssl-key-file no-such-key-3f9a.pem)\n"
    path = write(tmp_path, text)
    assert problems_of(tmp_path, text) == [
        f"{path}:1: option xend-relocation-server-ssl-key-file: expected existing file, got "
        "no-such-key-3f9a.pem (/etc/xen/no-such-key-3f9a.pem does not exist)"]


def test_file_options_existing_paths_and_empty(tmp_path):
    key = tmp_path / "k.pem"
    key.write_text("key")
    (tmp_path / "vnc").mkdir()
    opts = load_options(write(tmp_path, f"(xend-relocation-server-ssl-key-file {key})\n"
                                        f"(vnc-x509-cert-dir {tmp_path / 'vnc'})\n"
                                        "(xend-relocation-ssl-ca-file '')\n"))
    assert opts["xend-relocation-server-ssl-key-file"] == str(key)
    assert opts["vnc-x509-cert-dir"] == str(tmp_path / "vnc")
    assert opts["xend-relocation-ssl-ca-file"] is None
    text = f"(vnc-x509-cert-dir {key})\n(xend-relocation-ssl-ca-file {tmp_path})\n"
    path = write(tmp_path, text)
    assert problems_of(tmp_path, text) == [
        f"{path}:1: option vnc-x509-cert-dir: expected existing directory, got {key} "
        f"({key} is not a directory)",
        f"{path}:2: option xend-relocation-ssl-ca-file: expected existing file, got {tmp_path} "
        f"({tmp_path} is a directory)"]


def test_scripts_are_split_and_joined_to_the_scripts_path(tmp_path):
    opts = load_options(write(tmp_path, "(network-script 'network-bridge  netdev=eth1 bridge=br0')\n"
                                        "(resource-label-change-script /usr/bin/relabel)\n"))
    assert opts["network-script"] == ["/etc/xen/scripts/network-bridge", "netdev=eth1",
                                      "bridge=br0"]
    assert opts["resource-label-change-script"] == ["/usr/bin/relabel"]
    opts = load_options(write(tmp_path, f"(network-script net)\n(xend-scripts-path {tmp_path})\n"
                                        "(resource-label-change-script '')\n"))
    assert opts["network-script"] == [str(tmp_path / "net")]
    assert opts["resource-label-change-script"] is None



def test_scripts_may_be_overridden_with_an_argv_list(tmp_path):
    opts = options.defaults().with_overrides(network_script=["/bin/true", "x"],
                                             resource_label_change_script="relabel -v")
    assert opts["network-script"] == ["/bin/true", "x"]
    assert opts["resource-label-change-script"] == ["/etc/xen/scripts/relabel", "-v"]

# -- the Options object -----------------------------------------------------------------------------
def test_unknown_names_raise_key_error():
    opts = options.defaults()
    with pytest.raises(KeyError):
        opts["no-such-option"]
    with pytest.raises(KeyError):
        opts.source("no-such-option")
    assert opts.get("no-such-option") is None and "xend-port" in opts


def test_items_follow_the_table_order():
    assert list(options.defaults()) == [o.name for o in options.OPTIONS]


def test_values_handed_out_cannot_change_the_options():
    opts = options.defaults()
    opts["xen-api-server"].append(["9363"])
    opts.warnings.append("x")
    assert opts["xen-api-server"] == [["unix"]] and opts.warnings == []
    with pytest.raises(TypeError):
        opts["xend-port"] = 1           # type: ignore[index]


def test_with_overrides(tmp_path):
    base = load_options(write(tmp_path, "(xend-port 8100)\n(dom0-min-mem 0)\n"))
    opts = base.with_overrides({"xend-relocation-port": 0}, xend_unix_xmlrpc_path="/tmp/s",
                               dom0_min_mem="512", enable_dump=True, total_available_memory=2)
    assert opts["xend-relocation-port"] == 0
    assert opts["xend-unix-xmlrpc-path"] == "/tmp/s"
    assert opts["dom0-min-mem"] == 512
    assert opts["enable-dom0-ballooning"] is True     # computed again from the new value
    assert opts["total_available_memory"] == 2
    assert opts["enable-dump"] is True
    assert opts["xend-port"] == 8100 and opts.source("xend-port").endswith(":1")
    assert opts.source("xend-relocation-port") == "override"
    assert base["xend-relocation-port"] == 8002        # the original is unchanged
    assert opts.with_overrides(xend_port=None)["xend-port"] == 8000
    with pytest.raises(ConfigError) as info:
        base.with_overrides(xend_port="80x", enable_dump="perhaps")
    assert info.value.problems == ["override: option xend-port: expected port (0-65535), got 80x",
                                   "override: option enable-dump: expected bool, got perhaps"]
    with pytest.raises(KeyError):
        base.with_overrides(no_such_option=1)


def test_from_dict():
    opts = options.Options.from_dict({"hypervisor-backend": "simulated", "simulated-host-cpus": 4})
    assert opts["hypervisor-backend"] == "simulated" and opts["simulated-host-cpus"] == 4
    assert opts["xend-port"] == 8000


def test_parse_options_from_text():
    opts = parse_options("(xend-port 1)", source="inline")
    assert opts["xend-port"] == 1 and opts.source("xend-port") == "inline:1"


# -- check-config output ----------------------------------------------------------------------------
def test_render_check_config(tmp_path):
    path = write(tmp_path, "(xend-port 8100)\n(vncpasswd '')\n(xend-relocaton-port 1)\n")
    opts = load_options(path)
    assert "warning" not in options.render_check_config(opts)
    text = options.render_check_config(opts, show_warnings=True)
    lines = text.splitlines()
    assert lines[0] == f"config file: {path}"
    rows = {line.split()[0]: line for line in lines[3:] if line and not line.startswith("warning")}
    assert set(rows) == set(ALL_DEFAULTS)
    assert rows["xend-port"].split() == ["xend-port", "8100", f"{path}:1"]
    assert rows["vncpasswd"].split() == ["vncpasswd", "''", f"{path}:2"]
    assert rows["enable-dump"].split() == ["enable-dump", "no", "default"]
    assert rows["keymap"].split() == ["keymap", "(none)", "default"]
    # Sources line up in one column.
    assert len({row.index("default") for name, row in rows.items()
                if row.endswith("default") and len(row.split()) == 3}) == 1
    assert lines[-1] == (f"warning: {path}:3: unknown option 'xend-relocaton-port' ignored "
                         "(did you mean xend-relocation-port?)")


# -- the shipped file --------------------------------------------------------------------------------
SHIPPED_ACTIVE = {
    "xend-relocation-server": True,
    "xend-relocation-hosts-allow": LOCALHOST,
    "network-script": BRIDGE,
    "vif-script": "vif-bridge",
    "dom0-min-mem": 196,
    "enable-dom0-ballooning": True,
    "total_available_memory": 0,
    "dom0-cpus": 0,
    "vncpasswd": "",
}


def test_shipped_file_is_the_defaults_plus_its_active_lines():
    opts = load_options(str(SHIPPED))
    assert opts.warnings == []
    assert dict(opts.items()) == {**ALL_DEFAULTS, **SHIPPED_ACTIVE}
    assert {n for n in opts if opts.source(n) != "default"} == set(SHIPPED_ACTIVE)


def test_shipped_file_starts_like_the_original():
    assert SHIPPED.read_text().splitlines()[0] == "# -*- sh -*-"


def test_shipped_file_mentions_every_option():
    text = SHIPPED.read_text()
    for opt in options.OPTIONS:
        assert re.search(r"^#?\s*\(" + re.escape(opt.name) + r"[ )]", text, re.M), opt.name


def test_shipped_file_lists_our_options_after_the_originals():
    text = SHIPPED.read_text()
    marker = text.index("Options of this xend only")
    for opt in options.OPTIONS:
        pos = re.search(r"^#?\s*\(" + re.escape(opt.name) + r"[ )]", text, re.M).start()
        assert (pos > marker) == opt.added, opt.name


def test_shipped_file_commented_examples_are_valid(tmp_path):
    """Every one-line commented example names a real option with a well-formed value."""
    checked = 0
    for line in SHIPPED.read_text().splitlines():
        m = re.match(r"#\s*(\(.*\))\s*$", line)
        if not m:
            continue
        try:
            [form] = sxp.parse_all(m.group(1))
        except (sxp.ParseError, ValueError):
            continue                          # prose in parentheses, or a multi-line example
        if not (isinstance(form, list) and form and form[0] in options.BY_NAME):
            continue
        opt = options.BY_NAME[form[0]]
        if isinstance(opt.kind, options.File):
            continue                          # names files that need not exist here
        options.parse_options(m.group(1), source="example")   # raises on a bad value
        checked += 1
    assert checked >= 40


# -- size and nesting (issue 16, item 10) ------------------------------------------------------
class CountingText(str):
    """A str that adds up how many characters its count() calls scan."""
    scanned = 0

    def count(self, sub, start=0, end=None):   # noqa: D102
        end = len(self) if end is None else end
        CountingText.scanned += max(0, end - start)
        return super().count(sub, start, end)


def test_loading_is_linear_in_the_size_of_the_file():
    """Line numbers are counted from one form to the next, not from the start of the file
    for every form (which made a 1 MB file take 17 s)."""
    text = CountingText("(xend-port 8000)\n" * 20000)
    CountingText.scanned = 0
    opts = options.parse_options(text, source="big.sxp")
    assert opts["xend-port"] == 8000
    assert opts.warnings[-1].startswith("big.sxp:20000: option xend-port given again")
    assert CountingText.scanned <= 2 * len(text), CountingText.scanned


def test_an_absurdly_large_file_is_refused(tmp_path):
    path = tmp_path / "xend-config.sxp"
    with open(path, "wb") as f:
        f.write(b"(xend-port 8000)\n")
        f.truncate(100 * 1000 * 1000)        # 100 MB (sparse)
    with pytest.raises(ConfigError) as e:
        load_options(str(path))
    assert e.value.problems == [f"{path}: config file larger than 8 MiB: refused (a complete "
                                "xend-config.sxp is about 12 KiB)"]


def test_deep_nesting_is_a_clear_error_with_line_and_column(tmp_path):
    path = write(tmp_path, "(xend-port 8000)\n" + "(" * 100000 + ")" * 100000 + "\n")
    with pytest.raises(ConfigError) as e:
        load_options(path)
    assert e.value.problems == [f"{path}:2:257: too deeply nested: more than 256 levels of "
                                "parentheses"]
    r = subprocess.run([sys.executable, "-m", "xend.cli", "-c", path, "check-config"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "2:257: too deeply nested" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
