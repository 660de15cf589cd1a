"""Install size by role: what ``pip install mura[serve]`` costs against the pipeline's install, and their images.

Before the extras by role, every install was the one flat list plus TensorFlow: what ``mura[train,cpu]``
installs today. Each role's venv is made here from nothing with uv (from its cache: no download
when ``make install`` ran) and measured on disk (``du``: hard links to uv's cache counted once per
venv, as a fresh machine would store them). With ``--images``, the sizes of the images
``localhost/mura:cpu`` and ``localhost/mura:serve`` (``make image``, ``make image-serve``) are read from
podman. Appends to bench/RESULTS.md.

Usage: python bench/install_size.py [--roles serve train,cpu] [--images]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _results import append  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def venv_size(extras: str, folder: Path) -> tuple[int, int, float]:
    """Bytes on disk, number of distributions and install seconds of a fresh venv with ``mura[extras]``."""
    venv = folder / extras.replace(",", "-")
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    started = time.perf_counter()
    subprocess.run(
        [uv, "pip", "install", "-q", "--link-mode", "copy", "--python", str(venv / "bin/python"), f"{REPO}[{extras}]"],
        check=True,
    )
    seconds = time.perf_counter() - started
    listing = [uv, "pip", "list", "--format", "json", "--python", str(venv / "bin/python")]
    listed = subprocess.run(listing, capture_output=True, text=True)
    count = len(json.loads(listed.stdout)) if listed.returncode == 0 else -1
    size = int(subprocess.run(["du", "-sb", str(venv)], capture_output=True, text=True, check=True).stdout.split()[0])
    return size, count, seconds


def image_size(tag: str) -> int | None:
    """The image's size in bytes as podman reports it, or None when it is not built here."""
    if not shutil.which("podman"):
        return None
    done = subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", tag], capture_output=True, text=True)
    return int(done.stdout.strip()) if done.returncode == 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--roles", nargs="+", default=["serve", "train,cpu"], help="extras sets to measure")
    parser.add_argument("--images", action="store_true", help="also report localhost/mura:cpu and :serve from podman")
    args = parser.parse_args()
    lines = ["| install | size on disk | distributions | install time (uv, cached) |", "|---|---|---|---|"]
    sizes = {}
    with tempfile.TemporaryDirectory(prefix="mura-install-") as tmp:
        for extras in args.roles:
            size, count, seconds = venv_size(extras, Path(tmp))
            sizes[extras] = size
            lines.append(f"| `mura[{extras}]` | {size / 2**20:,.0f} MiB | {count} | {seconds:.0f} s |")
    if "serve" in sizes and "train,cpu" in sizes:
        lines.append(f"\n`mura[serve]` is {sizes['serve'] / sizes['train,cpu']:.0%} of `mura[train,cpu]` (the flat list before).")
    if args.images:
        for tag in ("localhost/mura:cpu", "localhost/mura:serve"):
            size_or_none = image_size(tag)
            lines.append(f"- image `{tag}`: " + (f"{size_or_none / 1e9:.2f} GB" if size_or_none else "not built here"))
    append("Install size by role", lines)


if __name__ == "__main__":
    main()
