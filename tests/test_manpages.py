"""The man pages: clean roff, and every option, command and variable the code has, documented.

The lists come from the programs themselves (`xend check-config`, `xm help`, `xend --help`,
xm's table of config variables), so an option or command added without its entry fails here.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.daemon_helpers import xend_command, xm_command

MAN = Path(__file__).resolve().parent.parent / "man"
PAGES = ("xm.1", "xend.8", "xend-config.sxp.5", "xmdomain.cfg.5")


def entries(page: str) -> set:
    """The names a page documents: the first word of each line after a .TP (tagged
    paragraphs), with roff's font changes and escaped hyphens undone."""
    lines = (MAN / page).read_text().splitlines()
    names = set()
    for tag, line in zip(lines, lines[1:]):
        if tag.startswith(".TP"):
            text = re.sub(r"^\.B[IR]?\s+", "", line)
            text = re.sub(r"\\f[BIRP]", "", text).replace("\\-", "-").strip('"')
            if text:
                names.add(text.split()[0].rstrip(","))
    return names


def run(cmd) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed (groff-base)")
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(page):
    r = subprocess.run(["groff", "-ww", "-z", "-man", str(MAN / page)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr


@pytest.mark.skipif(shutil.which("man") is None, reason="man not installed (man-db)")
@pytest.mark.parametrize("page", PAGES)
def test_man_l_shows_the_page_without_warnings(page):
    r = subprocess.run(["man", "-l", str(MAN / page)], capture_output=True, text=True,
                       timeout=60, env={"PATH": "/usr/bin:/bin", "MANWIDTH": "80", "LC_ALL": "C.UTF-8"})
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "NAME" in r.stdout and "SEE ALSO" in r.stdout


def test_every_option_check_config_lists_is_in_xend_config_sxp_5(tmp_path):
    empty = tmp_path / "empty.sxp"
    empty.write_text("")
    out = run(xend_command() + ["-c", str(empty), "check-config"])
    rows = out.split("\nOPTION ", 1)[1].splitlines()[1:]
    options = {row.split()[0] for row in rows if row.strip()}
    assert len(options) > 50
    missing = sorted(options - entries("xend-config.sxp.5"))
    assert not missing, f"options without an entry in man/xend-config.sxp.5: {missing}"


def test_every_xm_command_is_in_xm_1(tmp_path):
    out = run(xm_command() + ["help"])
    commands = {line.split()[0] for line in out.splitlines() if re.match(r" [a-z][a-z0-9-]* ", line)}
    assert {"create", "list", "migrate"} <= commands
    from xend.xm.main import ALIASES

    missing = sorted((commands | set(ALIASES)) - entries("xm.1"))
    assert not missing, f"xm commands without an entry in man/xm.1: {missing}"


def test_every_xm_command_option_is_in_xm_1():
    from xend.xm.main import COMMANDS

    text = (MAN / "xm.1").read_text().replace("\\-", "-")
    missing = [f"{name} {long or short}" for name, spec in COMMANDS.items()
               for short, long, _ in spec[4] if (long or short) not in text]
    assert not missing, f"xm options missing from man/xm.1: {missing}"


def test_every_config_variable_xm_reads_is_in_xmdomain_cfg_5():
    from xend.xm.xmconfig import OPTIONS

    missing = sorted(set(OPTIONS) - entries("xmdomain.cfg.5"))
    assert not missing, f"xm config variables without an entry in man/xmdomain.cfg.5: {missing}"


def test_every_xend_subcommand_is_in_xend_8():
    out = run(xend_command() + ["--help"])
    listed = out.split("\ncommands:\n", 1)[1].split("\n\n", 1)[0]
    commands = {line.split()[0] for line in listed.splitlines()}
    assert {"start", "stop", "status", "check-config", "install-files"} <= commands
    missing = sorted(commands - entries("xend.8"))
    assert not missing, f"xend subcommands without an entry in man/xend.8: {missing}"
