"""The guest image: the cached Debian kernel and an initramfs built here.

``scripts/fetch-guest-kernel`` downloads the distribution's kernel package (never
installed) and keeps vmlinuz plus the virtio and fuse modules in the cache. This
module orders the modules the guest needs by each one's ``depends=`` (the package has
no modules.dep), and writes a gzip'd cpio (newc) archive with busybox-static, those
modules and an init that loads them, mounts the share's tag and serves two shells:
ttyS0 for the test rig, ttyS1 for healer's serial transport.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GuestImage", "build_initramfs", "cache_dir", "find_kernel", "module_order"]

ROOT = Path(__file__).resolve().parents[2]
WANTED = ("virtio_pci", "virtiofs")
BUSYBOX = ("/bin/busybox", "/usr/bin/busybox")
READY = "HEALER-GUEST-READY"

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {modules}; do insmod /lib/modules/$m.ko || echo "guest: insmod $m failed"; done
arg() {{ sed -n "s/.*$1=\\([^ ]*\\).*/\\1/p" /proc/cmdline; }}
TAG=$(arg healer.tag); MNT=$(arg healer.mnt)
mkdir -p "$MNT"
i=0
until mount -t virtiofs "$TAG" "$MNT" 2>/dev/null; do
  i=$((i+1)); [ $i -ge 400 ] && break; sleep 0.05
done
grep -q " $MNT virtiofs " /proc/mounts || echo "guest: mounting $TAG failed"
export PS1='guest# '
# healer's console on ttyS1: a root shell, restarted when it ends
( while true; do setsid sh -i </dev/ttyS1 >/dev/ttyS1 2>&1; done ) &
stty -echo 2>/dev/null
echo "{ready} uptime=$(cut -d' ' -f1 /proc/uptime)"
# the rig's shell on ttyS0; init stays PID 1, so a shell that ends is restarted
while true; do setsid cttyhack sh; stty -echo 2>/dev/null; done
"""


@dataclass(frozen=True, slots=True)
class GuestImage:
    kernel: Path
    initramfs: Path
    version: str


def cache_dir() -> Path:
    return Path(os.environ.get("HEALER_GUEST_CACHE", ROOT / ".cache" / "guest"))


def find_kernel() -> Path | None:
    """The newest fetched kernel directory in the cache, if any."""
    found = sorted(
        d for d in cache_dir().glob("linux-image-*") if (d / "modules.dep.done").exists()
    )
    return found[-1] if found else None


def _depends(module: Path) -> list[str]:
    data = _module_bytes(module)
    start = data.find(b"\0depends=")
    if start < 0:
        return []
    end = data.index(b"\0", start + 1)
    text = data[start + len(b"\0depends=") : end].decode()
    return [d for d in text.split(",") if d]


def _module_bytes(module: Path) -> bytes:
    data = module.read_bytes()
    if module.name.endswith(".xz"):
        return lzma.decompress(data)
    if module.name.endswith(".ko"):
        return data
    msg = f"cannot unpack {module.name}: only .ko and .ko.xz are supported"
    raise RuntimeError(msg)


def module_order(kernel: Path, wanted: tuple[str, ...] = WANTED) -> list[Path]:
    """The modules to load, dependencies first; built-in ones are left out."""
    files = {p.name.split(".ko")[0].replace("-", "_"): p for p in (kernel / "modules").iterdir()}
    builtin_file = kernel / "modules.builtin"
    builtin = set()
    if builtin_file.exists():
        builtin = {
            Path(line).name.split(".ko")[0].replace("-", "_")
            for line in builtin_file.read_text().split()
        }
    order: list[Path] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in chain:
            msg = f"module dependency cycle: {' -> '.join((*chain, name))}"
            raise RuntimeError(msg)
        if name in builtin or any(p.name.split(".ko")[0] == name for p in order):
            return
        if name not in files:
            msg = f"module {name} is neither built in nor in {kernel / 'modules'}"
            raise RuntimeError(msg)
        for dep in _depends(files[name]):
            visit(dep, (*chain, name))
        order.append(files[name])

    for name in wanted:
        visit(name, ())
    return order


def _cpio_entry(name: str, mode: int, data: bytes = b"", ino: int = 0) -> bytes:
    encoded = name.encode() + b"\0"
    fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(encoded), 0]
    header = b"070701" + b"".join(f"{v:08x}".encode() for v in fields)
    pad_name = (4 - (len(header) + len(encoded)) % 4) % 4
    pad_data = (4 - len(data) % 4) % 4
    return header + encoded + b"\0" * pad_name + data + b"\0" * pad_data


def build_initramfs(kernel: Path, out: Path) -> Path:
    """Write the initramfs (cpio newc, gzip) unless one for the same inputs exists."""
    busybox = next((Path(b) for b in BUSYBOX if Path(b).exists()), None)
    if busybox is None or b"/ld-linux" in busybox.read_bytes()[:4096]:
        msg = "busybox-static is required: apt-get install busybox-static"
        raise RuntimeError(msg)
    modules = module_order(kernel)
    init = INIT.format(
        modules=" ".join(m.name.split(".ko")[0] for m in modules), ready=READY
    ).encode()
    files: list[tuple[str, int, bytes]] = [
        (d, 0o40755, b"") for d in ("bin", "dev", "proc", "sys", "mnt", "tmp", "lib", "lib/modules")
    ]
    files.append(("bin/busybox", 0o100755, busybox.read_bytes()))
    files += [
        (f"lib/modules/{m.name.split('.ko')[0]}.ko", 0o100644, _module_bytes(m)) for m in modules
    ]
    files.append(("init", 0o100755, init))
    digest = hashlib.sha256()
    for name, _, data in files:
        digest.update(name.encode() + hashlib.sha256(data).digest())
    target = out / f"initramfs-{digest.hexdigest()[:16]}.cpio.gz"
    if target.exists():
        return target
    archive = b"".join(_cpio_entry(n, m, d, i + 1) for i, (n, m, d) in enumerate(files))
    archive += _cpio_entry("TRAILER!!!", 0)
    partial = target.with_suffix(".partial")
    partial.write_bytes(gzip.compress(archive, compresslevel=1))
    partial.replace(target)
    return target
