"""Python-syntax domain config files -> (vm ...) SXP (reference 9.6), on the real config files of
../shared/fixtures/xm-config and on small files written here."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from xend import sxp
from xend.xm import xmconfig
from xend.xm.xmconfig import ConfigFileError

FIXTURE_CONFIGS = Path(__file__).resolve().parent.parent.parent / "shared" / "fixtures" / "xm-config"

# file -> (name, memory, builder, disks, vifs) once kernel/ramdisk exist and vmid=2 is given
EXPECTED = {
    "libvirt/test-disk-drv-blktap-raw.cfg": ("XenGuest1", 394, "linux", 1, 1),
    "libvirt/test-escape-paths.cfg": ("XenGuest2&test", 394, "hvm", 2, 1),
    "libvirt/test-fullvirt-localtime.cfg": ("XenGuest2", 394, "hvm", 2, 1),
    "libvirt/test-fullvirt-old-cdrom.cfg": ("XenGuest2", 394, "hvm", 1, 1),
    "libvirt/test-fullvirt-serial-dev-2-ports.cfg": ("XenGuest2", 394, "hvm", 2, 1),
    "libvirt/test-fullvirt-serial-tcp-telnet.cfg": ("XenGuest2", 394, "hvm", 2, 1),
    "libvirt/test-fullvirt-sound.cfg": ("XenGuest2", 394, "hvm", 2, 1),
    "libvirt/test-fullvirt-usbtablet.cfg": ("XenGuest2", 394, "hvm", 2, 1),
    "libvirt/test-no-source-cdrom.cfg": ("test", 350, "hvm", 2, 1),
    "libvirt/test-paravirt-extra-root.cfg": ("XenGuest1", 512, "linux", 1, 1),
    "libvirt/test-paravirt-maxvcpus.cfg": ("XenGuest1", 394, "linux", 1, 1),
    "libvirt/test-paravirt-net-vifname.cfg": ("XenGuest1", 394, "linux", 1, 1),
    "libvirt/test-paravirt-new-pvfb.cfg": ("XenGuest1", 394, "linux", 1, 1),
    "libvirt/test-paravirt-old-pvfb.cfg": ("XenGuest1", 394, "linux", 1, 1),
    "libvirt/test-paravirt-vcpu.cfg": ("XenGuest1", 394, "linux", 1, 1),
    "libvirt/test-pci-devs.cfg": ("test", 350, "hvm", 2, 1),
    "real-world/acmlug-blonolug.cfg": ("blonolug", "2048", "linux", 2, 1),
    "real-world/acmlug-dev.cfg": ("dev", "512", "linux", 2, 1),
    "real-world/nesousx-win7.cfg": ("win7", 12288, "hvm", 2, 1),
    "real-world/trimet-isaserver.cfg": ("isaserver", 512, "hvm", 1, 2),
    "real-world/trimet-serverex.cfg": ("serverex", 1024, "hvm", 2, 1),
    "real-world/trimet-sun2centos.cfg": ("sun2centos", 2048, "hvm", 1, 1),
    "xen-examples/3.0.0/xmexample.nbd": ("nbd4", 128, "linux", 1, 1),
    "xen-examples/3.0.0/xmexample.vmx": None,  # builder 'vmx': refused
    "xen-examples/3.0.0/xmexample1": ("ExampleDomain", 64, "linux", 1, 0),
    "xen-examples/3.0.0/xmexample2": ("VM2", 64, "linux", 2, 0),
    "xen-examples/3.0.0/xmexample3": ("VM2", 64, "linux", 1, 1),
    "xen-examples/3.2.0-rc6/xmexample.hvm": ("ExampleHVMDomain", 128, "hvm", 2, 1),
    "xen-examples/3.2.0-rc6/xmexample1": ("ExampleDomain", 64, "linux", 1, 1),
    "xen-examples/4.1.0/xmexample.hvm": ("ExampleHVMDomain", 128, "hvm", 2, 1),
    "xen-examples/4.1.0/xmexample.hvm-stubdom": ("xmexample.hvm", 128, "hvm", 2, 1),
    "xen-examples/4.1.0/xmexample.nbd": ("nbd4", 128, "linux", 1, 1),
    "xen-examples/4.1.0/xmexample.pv-grub": ("ExampleDomain", 128, "linux", 1, 1),
    "xen-examples/4.1.0/xmexample.vti": ("ExampleVTIDomain", 256, "hvm", 2, 1),
    "xen-examples/4.1.0/xmexample1": ("ExampleDomain", 64, "linux", 1, 1),
    "xen-examples/4.1.0/xmexample2": ("VM2", 64, "linux", 2, 1),
    "xen-examples/4.1.0/xmexample3": ("VM2", 64, "linux", 1, 1),
}

CLEAR_REASONS = (r'Cannot find (kernel|ramdisk) "[^"]+"\Z',
                 r".* needs the variable vmid \(.*\): give it on the command line as vmid=VALUE\Z",
                 r'Unknown builder "vmx": use "linux" or "hvm" \("vmx" was renamed "hvm" in Xen '
                 r'3\.0\.3\)\Z')


def fixture_files():
    if not FIXTURE_CONFIGS.is_dir():
        return []
    return sorted(str(p.relative_to(FIXTURE_CONFIGS)) for p in FIXTURE_CONFIGS.rglob("*")
                  if p.is_file())


@pytest.fixture
def boot_files(tmp_path):
    kernel, ramdisk = tmp_path / "vmlinuz", tmp_path / "initrd.img"
    kernel.write_bytes(b"\0" * 16)
    ramdisk.write_bytes(b"\0" * 16)
    return str(kernel), str(ramdisk)


def convert(path, *assignments, **kw):
    kw.setdefault("environ", {"HOME": "/home/u"})
    return xmconfig.load(str(path), list(assignments), **kw)[1]


def write(tmp_path, text, name="guest.cfg"):
    path = tmp_path / name
    path.write_text(text)
    return path


def image_of(config):
    return sxp.child_value(config, "image")


def devices(config, cls=None):
    devs = [d[1] for d in sxp.children(config, "device")]
    return [d for d in devs if cls is None or d[0] in cls]


# -- the documented example -------------------------------------------------------------------
def test_reference_example_converts_to_exactly_the_documented_sxp(tmp_path, boot_files):
    kernel, ramdisk = boot_files
    cfg = write(tmp_path, f'kernel="{kernel}"\nramdisk="{ramdisk}"\nmemory=256\nname="g1"\n'
                          "disk=['phy:/dev/vg/g1,xvda,w']\nvif=['']\nroot=\"/dev/xvda ro\"\n")
    # the reference's example, with what xm 4.4's defaults add: on_xend_start/stop, videoram
    assert sxp.to_string(convert(cfg)) == (
        "(vm (name g1) (memory 256) (on_xend_start ignore) (on_xend_stop ignore) (vcpus 1) "
        f"(oos 1) (image (linux (kernel {kernel}) (ramdisk {ramdisk}) (root '/dev/xvda ro') "
        "(videoram 4) (tsc_mode 0) (nomigrate 0))) "
        "(s3_integrity 1) (device (vbd (uname phy:/dev/vg/g1) (dev xvda) (mode w))) "
        "(device (vif)))")


# -- every real config file -------------------------------------------------------------------
def test_fixture_list_is_complete(shared_fixtures):
    assert set(fixture_files()) == set(EXPECTED)


@pytest.mark.parametrize("relpath", fixture_files())
def test_fixture_config_converts_or_is_refused_clearly(shared_fixtures, relpath):
    path = shared_fixtures / "xm-config" / relpath
    try:
        config = convert(path)
    except ConfigFileError as e:
        assert any(re.match(r, str(e)) for r in CLEAR_REASONS), str(e)
    else:
        assert config[0] == "vm" and sxp.child_value(config, "name")


@pytest.mark.parametrize("relpath", fixture_files())
def test_fixture_config_key_parts(shared_fixtures, relpath, boot_files):
    kernel, ramdisk = boot_files
    path = shared_fixtures / "xm-config" / relpath
    expected = EXPECTED[relpath]
    args = [f"kernel={kernel}", f"ramdisk={ramdisk}", "vmid=2"]
    if expected is None:
        # Xen 3.0's vmx builder passes through (the dry run shows it, as xm 4.4's did);
        # xm create refuses it (test_xm_cli)
        assert image_of(convert(path, *args))[0] == "vmx"
        return
    name, memory, builder, n_disks, n_vifs = expected
    config = convert(path, *args, warn=lambda m: None)
    assert sxp.child_value(config, "name") == name
    assert sxp.child_value(config, "memory") == memory
    image = image_of(config)
    assert image[0] == builder
    assert len(devices(config, ("vbd", "tap", "tap2"))) == n_disks
    assert len(devices(config, ("vif",))) == n_vifs
    assert sxp.child_value(config, "s3_integrity") == 1
    assert sxp.child_value(image, "tsc_mode") is not None
    if builder == "hvm":
        for key in ("acpi", "apic", "pae", "boot", "device_model"):
            assert sxp.child_value(image, key) is not None, key
    # the order of the top-level children is the documented one
    keys = [c[0] for c in config[1:]]
    assert keys.index("image") < keys.index("s3_integrity")
    n_devices = len(devices(config))
    assert keys[len(keys) - n_devices:] == ["device"] * n_devices  # devices come last
    # the SXP can be printed and read back unchanged (modulo ints, which print bare)
    assert sxp.to_string(sxp.from_string(sxp.to_string(config))) == sxp.to_string(config)


def test_fixture_spot_checks(shared_fixtures, boot_files):
    kernel, ramdisk = boot_files
    base = shared_fixtures / "xm-config"
    args = (f"kernel={kernel}", f"ramdisk={ramdisk}", "vmid=2")

    win7 = convert(base / "real-world/nesousx-win7.cfg")  # kernel = "hvmloader": left to xend
    image = image_of(win7)
    assert sxp.child_value(image, "kernel") == "hvmloader"
    assert sxp.child_value(image, "device_model") == "qemu-dm"
    assert sxp.child_value(image, "usbdevice") == "mouse"
    assert sxp.child_value(win7, "localtime") == 1
    pci = devices(win7, ("pci",))[0]
    assert [sxp.child_value(d, "key") for d in sxp.children(pci, "dev")] == \
        ["0000:01:00.0", "0000:01:00.1", "0000:00:1d.0"]
    assert [d[1][0] for d in sxp.children(win7, "device")][-1] == "vif"

    maxv = convert(base / "libvirt/test-paravirt-maxvcpus.cfg")
    assert sxp.child_value(maxv, "vcpu_avail") == 3 and sxp.child_value(maxv, "vcpus") == 4
    assert sxp.child_value(maxv, "bootloader") == "/usr/bin/pygrub"
    assert sxp.child_value(maxv, "bootloader_args") == "-q"

    pcidevs = convert(base / "libvirt/test-pci-devs.cfg", *args)
    assert [sxp.child_value(d, "key") for d in sxp.children(devices(pcidevs, ("pci",))[0], "dev")] \
        == ["0001:0c:1b.2", "0000:01:13.0"]

    ports = convert(base / "libvirt/test-fullvirt-serial-dev-2-ports.cfg", *args)
    assert sxp.child_value(image_of(ports), "serial") == ["/dev/ttyS0", "/dev/ttyS1"]

    tap = convert(base / "libvirt/test-disk-drv-blktap-raw.cfg")
    assert devices(tap, ("tap",))[0] == ["tap", ["uname", "tap:aio:/root/some.img"],
                                         ["dev", "xvda"], ["mode", "w"]]

    ex3 = convert(base / "xen-examples/4.1.0/xmexample3", *args)
    assert sxp.child_value(ex3, "cpus") == "2"
    assert sxp.child_value(image_of(ex3), "ip") == \
        "192.168.2.2::192.168.2.1:255.255.255.0:domain-2.xeno:eth0:off"
    assert sxp.child_value(image_of(ex3), "args") == "4 VMID=2"
    assert devices(ex3, ("vif",)) == [["vif", ["ip", "192.168.2.1/24"]]]

    nbd = convert(base / "xen-examples/4.1.0/xmexample.nbd", *args)
    assert sxp.child_value(image_of(nbd), "ip") == "::::nbd4:eth0:dhcp"
    assert sxp.child_value(image_of(nbd), "root") == "/dev/hda1 ro"

    isa = convert(base / "real-world/trimet-isaserver.cfg", *args)
    assert devices(isa, ("vif",)) == [["vif"], ["vif", ["bridge", "xenbr1"]]]
    assert sxp.child_value(image_of(isa), "device_model").endswith("/xen-4.1/bin/qemu-dm")
    assert sxp.child_value(image_of(isa), "vncdisplay") == 16
    assert sxp.child_value(isa, "shadow_memory") == 10

    pvfb = convert(base / "libvirt/test-paravirt-new-pvfb.cfg")
    assert devices(pvfb)[-2:] == [["vkbd"], ["vfb", ["vncunused", "1"],
                                             ["vnclisten", "127.0.0.1"], ["vncpasswd", "123poi"],
                                             ["vnc", "1"], ["xauthority", "/home/u/.Xauthority"]]]

    warnings = []
    convert(base / "xen-examples/3.0.0/xmexample.nbd", *args, warn=warnings.append)
    assert warnings and "nics option is deprecated" in warnings[0]


# -- behaviour of the conversion -------------------------------------------------------------
def test_values_from_python_ints_stay_ints_and_strings_stay_strings(tmp_path, boot_files):
    cfg = write(tmp_path, f'kernel="{boot_files[0]}"\nmemory=300\nvcpus="2"\nmaxmem=400\n')
    config = convert(cfg)
    assert sxp.child(config, "memory") == ["memory", 300]
    assert sxp.child(config, "vcpus") == ["vcpus", "2"]
    assert sxp.to_string(sxp.child(config, "maxmem")) == "(maxmem 400)"


def test_name_defaults_to_the_file_basename(tmp_path, boot_files):
    cfg = write(tmp_path, f'kernel="{boot_files[0]}"\n', name="web-01")
    assert sxp.child_value(convert(cfg), "name") == "web-01"


def test_command_line_options_win_over_the_file_and_are_typed(tmp_path, boot_files):
    cfg = write(tmp_path, f'kernel="{boot_files[0]}"\nname="a"\nmemory=256\n'
                          "disk=['phy:/dev/a,xvda,w']\n")
    config = convert(cfg, "memory=512", "name=b", "disk=phy:/dev/b,xvdb,r", "disk=phy:/dev/c,xvdc,w")
    assert sxp.child_value(config, "memory") == 512
    assert sxp.child_value(config, "name") == "b"
    assert [sxp.child_value(d, "uname") for d in devices(config)] == ["phy:/dev/b", "phy:/dev/c"]
    with pytest.raises(ConfigFileError, match=r"^Invalid value: lots$"):
        convert(cfg, "memory=lots")


def test_other_assignments_are_string_variables_of_the_script(tmp_path, boot_files):
    cfg = write(tmp_path, f'kernel="{boot_files[0]}"\nname = "vm-" + suffix\n'
                          "memory = int(mem) * 2\n")
    config = convert(cfg, "suffix=x", "mem=64")
    assert sxp.child_value(config, "name") == "vm-x"
    assert sxp.child_value(config, "memory") == 128


def test_xm_vars_checks(tmp_path, boot_files):
    cfg = write(tmp_path, "def check(var, val):\n    val = int(val)\n    if val <= 0:\n"
                          "        raise ValueError\n    return val\n"
                          "xm_vars.var('vmid', use='Virtual machine id.', check=check)\n"
                          "xm_vars.check()\n"
                          f'kernel="{boot_files[0]}"\nname = "VM%d" % vmid\n'
                          "assert xm_file.endswith('guest.cfg') and xm_help == 0\n")
    assert sxp.child_value(convert(cfg, "vmid=7"), "name") == "VM7"
    with pytest.raises(ConfigFileError, match=r"needs the variable vmid \(Virtual machine id\.\)"):
        convert(cfg)
    with pytest.raises(ConfigFileError, match=r"Invalid value for variable vmid in .*: '0'"):
        convert(cfg, "vmid=0")


def test_syntax_error_names_file_and_line(tmp_path):
    cfg = write(tmp_path, 'name = "x"\nmemory = = 5\n')
    with pytest.raises(ConfigFileError) as e:
        convert(cfg)
    assert str(e.value) == f"Errors were found at line 2 while processing {cfg}:\n\tmemory = = 5"


def test_runtime_error_names_file_and_line(tmp_path):
    cfg = write(tmp_path, 'name = "x"\n\nmemory = undefined_thing\n')
    with pytest.raises(ConfigFileError, match=r"^Error at line 3 while processing .*guest\.cfg: "
                                              r"NameError: name 'undefined_thing'"):
        convert(cfg)


def test_missing_kernel_and_bootloader(tmp_path):
    cfg = write(tmp_path, 'kernel = "/no/such/vmlinuz"\n')
    with pytest.raises(ConfigFileError, match=r'^Cannot find kernel "/no/such/vmlinuz"$'):
        convert(cfg)
    cfg = write(tmp_path, 'kernel = "/no/such/vmlinuz"\nbootloader = "pygrub"\n')
    config = convert(cfg)
    assert sxp.child_value(config, "bootloader") == "/usr/lib/xen/bin/pygrub"
    assert sxp.child_value(image_of(config), "kernel") == "/no/such/vmlinuz"
    assert sxp.child_value(convert(cfg, console_autoconnect=True), "bootloader_args") == ""
    cfg = write(tmp_path, 'bootloader = "/usr/bin/pygrub"\nbootargs = "--entry=xvda1:/vmlinuz"\n')
    assert sxp.child_value(convert(cfg), "bootloader_args") == "--entry=xvda1:/vmlinuz"


def test_relative_kernel_is_made_absolute(tmp_path, boot_files, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = write(tmp_path, 'kernel = "vmlinuz"\n')
    assert sxp.child_value(image_of(convert(cfg)), "kernel") == str(tmp_path / "vmlinuz")


def test_invalid_disk_and_vif(tmp_path, boot_files):
    k = boot_files[0]
    with pytest.raises(ConfigFileError, match=r"^Invalid disk specifier: phy:/dev/x,xvda$"):
        convert(write(tmp_path, f'kernel="{k}"\ndisk=["phy:/dev/x,xvda"]\n'))
    with pytest.raises(ConfigFileError, match=r"^Invalid vif option: colour$"):
        convert(write(tmp_path, f'kernel="{k}"\nvif=["mac=00:16:3e:00:00:01,colour=red"]\n'))
    with pytest.raises(ConfigFileError, match=r"should be a pair"):
        convert(write(tmp_path, f'kernel="{k}"\nvif=["bridge"]\n'))


def test_disk_classes_backend_and_protocol(tmp_path, boot_files):
    config = convert(write(tmp_path, f'kernel="{boot_files[0]}"\ndisk=['
                                     '"tap2:aio:/img,xvda,w", "phy:/dev/x,xvdb,r,dd,x86_64-abi"]\n'))
    assert devices(config) == [
        ["tap2", ["uname", "tap2:aio:/img"], ["dev", "xvda"], ["mode", "w"]],
        ["vbd", ["uname", "phy:/dev/x"], ["dev", "xvdb"], ["mode", "r"], ["backend", "dd"],
         ["protocol", "x86_64-abi"]]]


def test_root_ip_and_nfs(tmp_path, boot_files):
    k = boot_files[0]
    config = convert(write(tmp_path, f'kernel="{k}"\nroot="root=/dev/nfs"\nnfs_server="10.0.0.1"\n'
                                     'nfs_root="/export/g"\nextra="ro"\nip="10.0.0.5"\n'))
    image = image_of(config)
    assert sxp.child_value(image, "root") == "/dev/nfs"
    assert sxp.child_value(image, "ip") == "10.0.0.5:10.0.0.1::::eth0:off"
    assert sxp.child_value(image, "args") == "nfsroot=10.0.0.1:/export/g ro"
    with pytest.raises(ConfigFileError, match="Must set nfs root and nfs server"):
        convert(write(tmp_path, f'kernel="{k}"\nnfs_root="/export/g"\n'))


def test_top_level_order_and_optional_keys(tmp_path, boot_files):
    config = convert(write(tmp_path, f'kernel="{boot_files[0]}"\nname="o"\nuuid="u-1"\n'
                                     'on_crash="preserve"\non_xend_start="start"\ncpus="0-3,^1"\n'
                                     'cpu_weight=512\ncpu_cap=50\nmaxvcpus=4\npool="Pool-0"\n'
                                     'description="a test"\nlocaltime=1\n'
                                     'access_control=["policy=p,label=l"]\nirq=[7]\n'
                                     'ioports=["2f8-2ff"]\npci=["00:1d.0@5,msitranslate=0"]\n'))
    assert [c[0] for c in config[1:]] == [
        "name", "memory", "on_crash", "on_xend_start", "on_xend_stop", "description",
        "vcpu_avail", "vcpus",
        "uuid", "cpus", "cpu_cap", "cpu_weight", "localtime", "oos", "pool_name", "image",
        "s3_integrity", "security", "device", "device", "device"]
    assert sxp.child_value(config, "vcpus") == 4 and sxp.child_value(config, "vcpu_avail") == 1
    assert devices(config) == [
        ["pci", ["dev", ["domain", "0x0000"], ["bus", "0x00"], ["slot", "0x1d"], ["func", "0x0"],
                 ["vdevfn", "0x28"], ["key", "0000:00:1d.0"], ["opts", ["msitranslate", "0"]]]],
        ["ioports", ["from", "0x2f8"], ["to", "0x2ff"]],
        ["irq", ["irq", "7"]]]


def test_unknown_builder_and_xml_configs_are_refused(tmp_path):
    with pytest.raises(ConfigFileError, match=r'^Unknown builder "plan9"'):
        convert(write(tmp_path, 'builder = "plan9"\n'))
    with pytest.raises(ConfigFileError, match="Xen-API XML"):
        convert(write(tmp_path, "<vm/>\n"))


def test_config_is_found_on_the_search_path(tmp_path, boot_files, monkeypatch):
    sub = tmp_path / "etc"
    sub.mkdir()
    write(sub, f'kernel="{boot_files[0]}"\n', name="found.cfg")
    monkeypatch.chdir(tmp_path)
    path, config = xmconfig.load("found.cfg", [], search_path=f".:{sub}")
    assert path == os.path.join(str(sub), "found.cfg")
    with pytest.raises(ConfigFileError, match=r"^Unable to open config file: nothere\.cfg$"):
        xmconfig.load("nothere.cfg", [], search_path=f".:{sub}")


@pytest.mark.parametrize("line,image_type,pvh", [
    ('type = "pvh"', "linux", True), ("pvh = 1", "linux", True), ('type = "pv"', "linux", False),
    ('type = "hvm"', "hvm", False),
])
def test_xl_guest_types_are_read(tmp_path, boot_files, line, image_type, pvh):
    """xl's ``type`` (and the 4.4-4.9 ``pvh = 1``): a PVH guest is a linux image with
    ``(pvh 1)``, type hvm the hvm builder."""
    kernel = boot_files[0]
    cfg = write(tmp_path, f'name = "t"\nkernel = "{kernel}"\n{line}\n')
    image = image_of(convert(cfg))
    assert image[0] == image_type
    assert (["pvh", 1] in image[1:]) is pvh


def test_an_unknown_guest_type_is_refused(tmp_path, boot_files):
    cfg = write(tmp_path, f'name = "t"\nkernel = "{boot_files[0]}"\ntype = "xen"\n')
    with pytest.raises(ConfigFileError, match='Unknown type "xen": use "pv", "pvh" or "hvm"'):
        convert(cfg)
