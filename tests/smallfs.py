"""A small file system that a test can fill: a tmpfs mounted over a directory, and a filler file to fill it.

Mounting needs root (the test machines and CI run as root). Elsewhere ``small_filesystem`` skips the test with the
reason, and under CI=true tests/conftest.py turns that skip into a failure. Importable from every test directory
because tests/conftest.py's directory is on sys.path (pytest's rootdir conftest).

    with small_filesystem(tmp_path / "data", size_mib=16) as fs:
        fs.fill()      # a filler file takes every free byte: the next write that needs space gets ENOSPC
        ...
        fs.free()      # the filler is deleted: space is back
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class SmallFilesystem:
    mountpoint: Path

    @property
    def filler(self) -> Path:
        return self.mountpoint / "filler"

    def available(self) -> int:
        """Bytes an unprivileged write could still take."""
        stat = os.statvfs(self.mountpoint)
        return stat.f_bavail * stat.f_frsize

    def fill(self) -> None:
        """Write the filler until the file system refuses: big chunks, then a page at a time for the rest."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1024 * 1024, 4096, 512):
                data = b"\0" * chunk
                while True:
                    try:
                        os.write(fd, data)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
        finally:
            os.close(fd)
        assert self.available() == 0, self.available()

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)


@contextlib.contextmanager
def small_filesystem(mountpoint: Path, *, size_mib: int) -> Iterator[SmallFilesystem]:
    """Mount a tmpfs of ``size_mib`` MiB over ``mountpoint`` (created, and empty) for the block; unmounted after
    it, lazily when a process of the test still holds a file there (it is then detached at once, freed when the
    last file closes)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs to fill (run the tests as root, as CI does)")
    mount = shutil.which("mount")
    umount = shutil.which("umount")
    if mount is None or umount is None:
        pytest.skip("needs the mount and umount commands to mount a small tmpfs to fill")
    mountpoint.mkdir(parents=True, exist_ok=True)
    assert not any(mountpoint.iterdir()), f"{mountpoint} is not empty"
    done = subprocess.run(
        [mount, "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs on {mountpoint}: {done.stderr.strip()}")
    try:
        yield SmallFilesystem(mountpoint)
    finally:
        if subprocess.run([umount, str(mountpoint)], capture_output=True, check=False).returncode != 0:
            subprocess.run([umount, "--lazy", str(mountpoint)], capture_output=True, check=True)
