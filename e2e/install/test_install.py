"""install.sh, the one-line installer, against a release served from 127.0.0.1.

`make install-test` runs `make dist` first (the dev profile's build under `make test`); these
tests serve its archives the way GitHub serves a release:

  /releases/latest                      302 -> /releases/tag/v<version>
  /releases/tag/v<version>              200 (the release page)
  /releases/latest/download/<asset>     302 -> /releases/download/v<version>/<asset>
  /releases/download/v<version>/<asset> the file

and run `curl -sSfL <loopback>/releases/latest/download/install.sh | sh` (the README's one
line with LINKERD_TRUST_RELEASE_URL pointing at loopback) with HOME in a temporary directory.

The host's build is a glibc (-gnu) binary, and install.sh asks for the musl archive on Linux
(what the release ships): the server serves the host's archive under the name install.sh asks
for, e.g. linkerd-trust-v0.1.0-x86_64-unknown-linux-gnu.tar.gz as
linkerd-trust-v0.1.0-x86_64-unknown-linux-musl.tar.gz, repacked with that name's top directory
and with a .sha256 naming it. Only the name differs from a release; the binary is the one
`make dist` packaged.
"""
from __future__ import annotations

import hashlib
import io
import os
import platform
import re
import shutil
import subprocess
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DIST = Path(os.environ.get("DIST_DIR", REPO / "target" / "dist"))
INSTALL_SH = REPO / "dist" / "install.sh"


def host_triple() -> str:
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    return re.search(r"^host: (\S+)$", out, re.M).group(1)


def release_target() -> str:
    """The triple install.sh picks on this machine (its uname -s / uname -m table)."""
    os_, arch = platform.system(), platform.machine()
    table = {
        ("Linux", "x86_64"): "x86_64-unknown-linux-musl",
        ("Linux", "amd64"): "x86_64-unknown-linux-musl",
        ("Linux", "aarch64"): "aarch64-unknown-linux-musl",
        ("Linux", "arm64"): "aarch64-unknown-linux-musl",
        ("Darwin", "x86_64"): "x86_64-apple-darwin",
        ("Darwin", "arm64"): "aarch64-apple-darwin",
    }
    if (os_, arch) not in table:
        pytest.skip(f"install.sh has no release for {os_} {arch}")
    return table[(os_, arch)]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Release:
    """A release's assets by name, and every path requested."""
    version: str
    assets: dict[str, bytes]
    archive: str = ""  # the linkerd-trust archive's name for this platform
    requests: list[str] = field(default_factory=list)
    url: str = ""


def serve(release: Release):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):  # noqa: N802
            release.requests.append(self.path)
            tag = f"v{release.version}"
            if self.path == "/releases/latest":
                return self.redirect(f"/releases/tag/{tag}")
            if self.path.startswith("/releases/latest/download/"):
                return self.redirect(f"/releases/download/{tag}/" + self.path.rsplit("/", 1)[1])
            if self.path == f"/releases/tag/{tag}":
                return self.reply(200, b"<html>release</html>")
            prefix = f"/releases/download/{tag}/"
            if self.path.startswith(prefix) and self.path[len(prefix):] in release.assets:
                return self.reply(200, release.assets[self.path[len(prefix):]])
            return self.reply(404, b"Not Found")

        def do_HEAD(self):  # noqa: N802 (wget --spider)
            self.do_GET()

        def redirect(self, location: str):
            self.send_response(302)
            self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def reply(self, code: int, body: bytes):
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    # Loopback only: never any other address.
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    release.url = f"http://127.0.0.1:{server.server_address[1]}/releases"
    return server


def repack(archive: bytes, old_top: str, new_top: str) -> bytes:
    """The archive with its top directory renamed (the host's triple -> the release's)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as src, \
            tarfile.open(fileobj=out, mode="w:gz", compresslevel=1) as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            member.name = new_top + member.name[len(old_top):]
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


@pytest.fixture(scope="module")
def dist() -> dict:
    """What `make dist` built for the host: version, target, archive names."""
    checksums = DIST / "checksums.txt"
    if not checksums.exists():
        pytest.fail(f"{checksums} is missing: run make dist (make install-test does)")
    host = host_triple()
    names = [line.split()[1] for line in checksums.read_text().splitlines()]
    cli = [n for n in names if re.fullmatch(rf"linkerd-trust-v[0-9][^-]*-{re.escape(host)}\.tar\.gz", n)]
    assert cli, f"no linkerd-trust archive for {host} in {checksums}: {names}"
    version = re.match(r"linkerd-trust-v(.+?)-" + re.escape(host), cli[0]).group(1)
    return {"version": version, "host": host, "names": names, "cli": cli[0]}


@pytest.fixture(scope="module")
def platform_archive(dist) -> tuple[str, bytes]:
    """The host's archive, renamed (and repacked once) as the release's for this platform."""
    v = dist["version"]
    old_top = f"linkerd-trust-v{v}-{dist['host']}"
    new_top = f"linkerd-trust-v{v}-{release_target()}"
    return f"{new_top}.tar.gz", repack((DIST / dist["cli"]).read_bytes(), old_top, new_top)


@pytest.fixture
def release(dist, platform_archive):
    """A release serving this platform's archive, its .sha256 and install.sh."""
    v = dist["version"]
    name, archive = platform_archive
    rel = Release(version=v, archive=name, assets={
        name: archive,
        f"{name}.sha256": f"{sha256(archive)}  {name}\n".encode(),
        "install.sh": (DIST / "install.sh").read_bytes(),
    })
    server = serve(rel)
    yield rel
    server.shutdown()
    server.server_close()


def run_installer(release: Release, home: Path, path: str | None = None, **env: str):
    """`curl -sSfL <release>/latest/download/install.sh | sh`, as the README says."""
    full = {
        "HOME": str(home),
        "PATH": path if path is not None else os.environ["PATH"],
        "LINKERD_TRUST_RELEASE_URL": release.url,
        "LANG": "C",
    }
    full.update(env)
    return subprocess.run(
        ["sh", "-c", 'curl -sSfL "$LINKERD_TRUST_RELEASE_URL/latest/download/install.sh" | sh'],
        env=full, capture_output=True, text=True, timeout=120)


def installed(home: Path) -> Path:
    return home / ".linkerd2" / "bin" / "linkerd-trust"


def test_dist_archives_and_checksums(dist):
    """make dist's output: each archive, its .sha256 and checksums.txt agree; the archive holds
    the binary under <name>/; on Linux the operator's archive is there too."""
    host, v = dist["host"], dist["version"]
    expected = {dist["cli"], "install.sh"}
    if "-linux-" in host:
        expected.add(f"trust-rotation-operator-v{v}-{host}.tar.gz")
    assert expected <= set(dist["names"])
    assert (DIST / "install.sh").read_bytes() == INSTALL_SH.read_bytes()
    for line in (DIST / "checksums.txt").read_text().splitlines():
        digest, name = line.split("  ")
        assert sha256((DIST / name).read_bytes()) == digest, name
        if name.endswith(".tar.gz"):
            assert (DIST / f"{name}.sha256").read_text() == f"{digest}  {name}\n"
            top = name[: -len(".tar.gz")]
            binary = top.split("-v")[0]
            with tarfile.open(DIST / name) as tar:
                member = tar.getmember(f"{top}/{binary}")
                assert member.isfile() and member.mode & 0o111, f"{top}/{binary} is not executable"
                assert f"{top}/README.md" in tar.getnames()
    # sha256sum itself accepts the files (the format users check with).
    subprocess.run(["sha256sum", "--check", "--strict", "checksums.txt"], cwd=DIST, check=True,
                   capture_output=True)


def test_install_latest(release, tmp_path):
    """The one line installs the latest release's binary, executable, in ~/.linkerd2/bin, and
    says how to put it on PATH and run `linkerd trust version`."""
    out = run_installer(release, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    binary = installed(tmp_path)
    assert binary.is_file() and os.access(binary, os.X_OK)
    assert "Checksum verified" in out.stdout
    assert f"export PATH=$PATH:{binary.parent}" in out.stdout
    assert "linkerd trust version" in out.stdout
    version = subprocess.run([str(binary), "version", "--client"], capture_output=True, text=True, timeout=30)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"Client version: {release.version}"
    # It asked for the latest release, then for this platform's archive and its checksum.
    name = release.archive
    assert f"/releases/download/v{release.version}/{name}" in release.requests
    assert f"/releases/download/v{release.version}/{name}.sha256" in release.requests


def test_install_pinned_version_into_linkerd2_dir(release, tmp_path):
    """LINKERD_TRUST_VERSION pins the release (with or without the v); LINKERD2_DIR moves the
    install root; with bin/ on PATH already there is no PATH hint."""
    root = tmp_path / "linkerd2"
    path = f"{root / 'bin'}:{os.environ['PATH']}"
    out = run_installer(release, tmp_path, path=path, LINKERD2_DIR=str(root),
                        LINKERD_TRUST_VERSION=release.version)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (root / "bin" / "linkerd-trust").is_file()
    assert not installed(tmp_path).exists()
    assert "export PATH" not in out.stdout
    assert "/releases/latest" not in release.requests


def test_checksum_mismatch_installs_nothing(release, tmp_path):
    name = release.archive
    release.assets[f"{name}.sha256"] = f"{'0' * 64}  {name}\n".encode()
    out = run_installer(release, tmp_path)
    assert out.returncode != 0
    assert "checksum mismatch" in out.stderr
    assert "nothing installed" in out.stderr
    assert not (tmp_path / ".linkerd2").exists()


def test_corrupt_archive_installs_nothing(release, tmp_path):
    """The archive changed after its checksum was published (the .sha256 is the original's)."""
    name = release.archive
    release.assets[name] = release.assets[name][:-100] + b"\0" * 100
    out = run_installer(release, tmp_path)
    assert out.returncode != 0
    assert "checksum mismatch" in out.stderr
    assert not (tmp_path / ".linkerd2").exists()


@pytest.mark.parametrize("os_name,arch", [("Windows_NT", "x86_64"), ("Linux", "mips"), ("FreeBSD", "amd64")])
def test_unsupported_platform(release, tmp_path, os_name, arch):
    """A fake uname (PATH shim): a clear error naming the OS/arch and what is supported; no
    download beyond install.sh itself, nothing installed."""
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "uname").write_text(
        f'#!/bin/sh\ncase "$1" in -s) echo {os_name} ;; -m) echo {arch} ;; *) echo {os_name} ;; esac\n')
    (shim / "uname").chmod(0o755)
    home = tmp_path / "home"
    home.mkdir()
    out = run_installer(release, home, path=f"{shim}:{os.environ['PATH']}")
    assert out.returncode != 0
    assert f"no linkerd-trust release for {os_name} {arch}" in out.stderr
    for supported in ("Linux x86_64", "Linux aarch64", "Darwin x86_64", "Darwin arm64"):
        assert supported in out.stderr
    assert [r for r in release.requests if not r.endswith("/install.sh")] == []
    assert not (home / ".linkerd2").exists()


def test_missing_release(release, tmp_path):
    """A version that was never released: the 404 is named, nothing installed."""
    out = run_installer(release, tmp_path, LINKERD_TRUST_VERSION="9.9.9")
    assert out.returncode != 0
    assert "could not download" in out.stderr and "v9.9.9" in out.stderr
    assert not (tmp_path / ".linkerd2").exists()


@pytest.mark.skipif(shutil.which("wget") is None, reason="wget is not installed")
def test_install_with_wget_only(release, tmp_path):
    """Without curl, install.sh downloads with wget (the script itself is piped in)."""
    bindir = tmp_path / "tools"
    bindir.mkdir()
    # A PATH holding what install.sh needs, except curl.
    for tool in ("sh", "wget", "uname", "mktemp", "rm", "cut", "tr", "sed", "tail", "tar", "gzip",
                 "mkdir", "cp", "chmod", "mv", "sha256sum", "cat"):
        found = shutil.which(tool)
        assert found, tool
        (bindir / tool).symlink_to(found)
    home = tmp_path / "home"
    home.mkdir()
    out = subprocess.run(["sh", str(INSTALL_SH)], capture_output=True, text=True, timeout=120, env={
        "HOME": str(home), "PATH": str(bindir), "LINKERD_TRUST_RELEASE_URL": release.url})
    assert out.returncode == 0, out.stdout + out.stderr
    assert installed(home).is_file()
    assert "/releases/latest" in release.requests
