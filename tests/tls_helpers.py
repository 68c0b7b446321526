"""Certificates for the TLS tests: a CA, certificates it signs, and a stranger's self-signed
one (made with the openssl command; the tests skip when it is missing)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Tuple

import pytest

SUBJECT_ALT = "subjectAltName=DNS:localhost,IP:127.0.0.1"


def _openssl(*args: str) -> None:
    if not shutil.which("openssl"):
        pytest.skip("openssl not installed")
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def self_signed(dirpath: Path, name: str) -> Tuple[Path, Path]:
    """(key, cert) of a self-signed certificate (CN=localhost)."""
    key, cert = dirpath / f"{name}.key", dirpath / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
             "-out", str(cert), "-days", "2", "-subj", f"/CN={name}", "-addext", SUBJECT_ALT)
    return key, cert


class CA:
    def __init__(self, dirpath: Path, name: str = "test-ca"):
        self.dir = dirpath
        self.key, self.cert = self_signed(dirpath, name)

    def issue(self, name: str, san: str = SUBJECT_ALT) -> Tuple[Path, Path]:
        """(key, cert) signed by this CA, for ``san`` (default localhost), server and
        client."""
        key, csr, cert = (self.dir / f"{name}.key", self.dir / f"{name}.csr",
                          self.dir / f"{name}.crt")
        ext = self.dir / f"{name}.ext"
        ext.write_text(san + "\n")
        _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                 "-out", str(csr), "-subj", f"/CN={name}")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey",
                 str(self.key), "-CAcreateserial", "-out", str(cert), "-days", "2",
                 "-extfile", str(ext))
        return key, cert
