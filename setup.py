"""xend: a Python 3 reimplementation of the Xen node control daemon, xm and its init script."""
import glob
import os

from setuptools import find_packages, setup


def etc_files(pattern):
    return [f for f in glob.glob(pattern) if os.path.isfile(f)]


setup(
    name="xend",
    version="4.4.0.1",
    description="Xen node control daemon (xend), the xm client and the SysV init script",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["xend", "xend.*"]),
    install_requires=[
        "sexpdata==1.0.2",
        "python-daemon==3.1.2",
        "lockfile==0.12.2",
        # PAM for the Xen-API's pam listeners: ctypes, no compiler, Python 3.9+
        "pamela==1.2.0",
    ],
    extras_require={
        "test": ["pytest==9.0.3", "pytest-timeout==2.4.0", "hypothesis==6.155.2",
                 "XenAPI==26.21.1"],
    },
    entry_points={
        "console_scripts": [
            "xend = xend.cli:main",
            "xm = xend.xm.main:main",
            "xend-sim = xend.simcli:main",
        ],
    },
    # Installed under <prefix>/share/xend/etc; `xend install-files` lays them into / (or a
    # --root) without overwriting an administrator's edited files.
    data_files=[
        ("share/xend/etc/xen", etc_files("etc/xen/*")),
        ("share/xend/etc/xen/scripts", etc_files("etc/xen/scripts/*")),
        ("share/xend/etc/init.d", etc_files("etc/init.d/*")),
        ("share/xend/etc/default", etc_files("etc/default/*")),
        ("share/xend/etc/logrotate.d", etc_files("etc/logrotate.d/*")),
        ("share/xend/etc/systemd", etc_files("etc/systemd/*")),
    ],
)
