"""Self-signed certificates for the TLS tests, made with ``openssl`` into a directory.

A certificate authority, a server certificate for ``127.0.0.1`` and ``localhost`` and a client
certificate signed by it, and a second authority that signed neither (the wrong CA).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.faults.conftest import skip_without


@dataclass(frozen=True, kw_only=True, slots=True)
class Certificates:
    """The files: ``ca``, ``server_cert``/``server_key``, ``client_cert``/``client_key``, ``wrong_ca``."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    wrong_ca: Path


def _openssl(*args: str, directory: Path) -> None:
    subprocess.run(
        [skip_without("openssl"), *args], cwd=directory, check=True, capture_output=True, timeout=60
    )


def _authority(name: str, directory: Path) -> None:
    _openssl(
        *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
        *("-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN=django_tq test {name}"),
        directory=directory,
    )


def _signed(name: str, common_name: str, directory: Path, *, server: bool) -> None:
    _openssl(
        *("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key"),
        *("-out", f"{name}.csr", "-subj", f"/CN={common_name}"),
        directory=directory,
    )
    extensions = directory / f"{name}.ext"
    usage = "serverAuth" if server else "clientAuth"
    alt_names = "subjectAltName = IP:127.0.0.1, DNS:localhost\n" if server else ""
    extensions.write_text(f"{alt_names}extendedKeyUsage = {usage}\n")
    _openssl(
        *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key"),
        *("-CAcreateserial", "-days", "2", "-out", f"{name}.crt", "-extfile", extensions.name),
        directory=directory,
    )
    (directory / f"{name}.key").chmod(0o600)


def make_certificates(directory: Path) -> Certificates:
    """Write a CA, a server and a client certificate, and a wrong CA, into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    _authority("ca", directory)
    _authority("wrong-ca", directory)
    _signed("server", "127.0.0.1", directory, server=True)
    _signed("client", "django_tq client", directory, server=False)
    return Certificates(
        ca=directory / "ca.crt",
        server_cert=directory / "server.crt",
        server_key=directory / "server.key",
        client_cert=directory / "client.crt",
        client_key=directory / "client.key",
        wrong_ca=directory / "wrong-ca.crt",
    )
