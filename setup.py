"""xend: a Python 3 reimplementation of the Xen node control daemon, xm and its init script."""
import glob
import os

from setuptools import find_packages, setup


def etc_data_files():
    """Every file of etc/, under share/xend/etc (``xend install-files`` lays them into /)."""
    found = []
    for dirpath, dirs, files in sorted(os.walk("etc")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        paths = [os.path.join(dirpath, f) for f in sorted(files)]
        if paths:
            found.append((os.path.join("share", "xend", dirpath), paths))
    return found


def man_data_files():
    """man/NAME.N -> share/man/manN, where man(1) finds them when <prefix>/bin is on PATH."""
    sections = {}
    for page in sorted(glob.glob("man/*.[1-8]")):
        sections.setdefault(page.rsplit(".", 1)[1], []).append(page)
    return [(f"share/man/man{n}", pages) for n, pages in sorted(sections.items())]


setup(
    name="xend",
    version="4.4.0.1",
    description="Xen node control daemon (xend), the xm client and the SysV init script",
    long_description=open("README.md").read() if os.path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["xend", "xend.*"]),
    install_requires=[
        "sexpdata==1.0.2",
        "python-daemon==3.1.2",
        "lockfile==0.12.2",
        # PAM for the Xen-API's pam listeners: ctypes, no compiler, Python 3.9+
        "pamela==1.2.0",
        # XXH3-64, the checksum of save and migration images (~40 GB/s; zlib's CRC-32, 3 GB/s,
        # was a third of a migration's time on each end). Optional at run time: without it
        # xend writes CRC-32 images (see xend/domains/image.py).
        "xxhash==4.1.0",
    ],
    extras_require={
        # pytest 9 and hypothesis after 6.141 need Python 3.10: 3.9 gets the last that run on it.
        "test": [
            'pytest==9.0.3; python_version >= "3.10"',
            'pytest==8.4.2; python_version < "3.10"',
            "pytest-timeout==2.4.0",
            'hypothesis==6.155.2; python_version >= "3.10"',
            'hypothesis==6.141.1; python_version < "3.10"',
            "XenAPI==26.21.1",
        ],
        # `python -m bench` draws its scaling chart (bench/plot.py) with matplotlib; without
        # it the benchmark prints and writes its table and says the chart was skipped.
        "bench": [
            'matplotlib==3.10.8; python_version >= "3.10"',
            'matplotlib==3.9.4; python_version < "3.10"',
        ],
    },
    entry_points={
        "console_scripts": [
            "xend = xend.cli:main",
            "xm = xend.xm.main:main",
            "xend-sim = xend.simcli:main",
        ],
    },
    # Installed under <prefix>/share: etc/ as share/xend/etc (`xend install-files` lays it into /
    # or a --root, never overwriting an administrator's edited files), the man pages, and xm's
    # bash completion where bash-completion looks for it beside <prefix>/bin.
    data_files=etc_data_files() + man_data_files() + [
        ("share/bash-completion/completions", ["etc/bash_completion.d/xm"]),
    ],
)
