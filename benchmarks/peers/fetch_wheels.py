"""Fetch the peers' pinned wheels for the GPU image (Python 3.12, x86-64) and audit what they require.

    python3 benchmarks/peers/fetch_wheels.py                  # every group in benchmarks/peers/pins/
    python3 benchmarks/peers/fetch_wheels.py trl tunix        # some groups

Each group `pins/<group>.txt` lists `name==version` lines (and `# ignore: a b c` lines naming requirements left out on
purpose). Wheels land in `.wheels/peers/<group>/` of the project root (ignored by git), fetched with `--no-deps`:
`benchmarks/peers/install.sh` installs each group on the device with `--no-deps` into its own folder, so groups never
see one another. The audit lists every unconditional requirement of a group's wheels that is neither in the group, nor
on the device image (`device-pip-list.txt`), nor ignored, and exits 1 if there is one: the device has no network, so a
missing module there is found only at run time. Sizes are printed per group and in total (the device transfer limit
is 64 MiB for the whole tree).
"""
from __future__ import annotations

import argparse
import pathlib
import re
import subprocess
import sys
import zipfile

from packaging.markers import default_environment
from packaging.requirements import Requirement

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PIP_PLATFORM = ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"] + [
    x for n in ("2_17", "2_24", "2_27", "2_28", "2_31", "2_34", "2_35") for x in ("--platform", f"manylinux_{n}_x86_64")
] + ["--platform", "manylinux2014_x86_64", "--platform", "manylinux1_x86_64"]
# The device's interpreter, for evaluating requirement markers (python_version, sys_platform, ...).
DEVICE_MARKERS = {**default_environment(), "python_version": "3.12", "python_full_version": "3.12.3",
                  "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
                  "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def canonical(name: str) -> str:
    """PEP 503 name: lower case, runs of '-', '_', '.' as one '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def device_image(path: pathlib.Path) -> dict[str, str]:
    """{canonical name: version} of the device image's `pip list` (two header lines)."""
    out = {}
    for line in path.read_text().splitlines()[2:]:
        parts = line.split()
        if len(parts) >= 2:
            out[canonical(parts[0])] = parts[1]
    return out


def read_pins(path: pathlib.Path) -> tuple[list[str], set[str]]:
    """(['name==version', ...], {ignored canonical names}) of one pins file."""
    pins, ignored = [], set()
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if line.startswith("# ignore:"):
            ignored |= {canonical(x) for x in line.split(":", 1)[1].split()}
        elif line and not line.startswith("#"):
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[A-Za-z0-9.+!-]+", line):
                raise SystemExit(f"{path}:{n}: expected 'name==version', got {line!r}")
            pins.append(line)
    return pins, ignored


def wheel_requirements(wheel: pathlib.Path) -> list[Requirement]:
    """Requires-Dist entries of a wheel that apply on the device (markers evaluated, extras off)."""
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    reqs = []
    for line in text.splitlines():
        if line.startswith("Requires-Dist:"):
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is None or req.marker.evaluate(DEVICE_MARKERS):
                reqs.append(req)
    return reqs


def wheel_name(wheel: pathlib.Path) -> str:
    return canonical(wheel.name.split("-")[0])


def fetch(group: str, pins: list[str], dest: pathlib.Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for pin in pins:
        name = canonical(pin.split("==")[0])
        if any(wheel_name(w) == name and f"-{pin.split('==')[1]}-" in w.name for w in dest.glob("*.whl")):
            continue
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *PIP_PLATFORM, "-d", str(dest), pin]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{group}: pip could not fetch {pin}: {r.stderr.strip().splitlines()[-1:]}")


def audit(group: str, dest: pathlib.Path, pins: list[str], ignored: set[str], image: dict[str, str]) -> list[str]:
    """Problems of one fetched group: stray wheels, and requirements met by nothing."""
    pinned = {canonical(p.split("==")[0]) for p in pins}
    wheels = sorted(dest.glob("*.whl"))
    have = {wheel_name(w) for w in wheels}
    problems = [f"{group}: {w.name} is in {dest} but not pinned" for w in wheels if wheel_name(w) not in pinned]
    problems += [f"{group}: no wheel for pinned {n}" for n in sorted(pinned - have)]
    for w in wheels:
        for req in wheel_requirements(w):
            name = canonical(req.name)
            if name in have or name in ignored:
                continue
            if name not in image:
                problems.append(f"{group}: {wheel_name(w)} requires {req}, which is neither pinned, on the image, "
                                f"nor ignored in pins/{group}.txt")
            elif not req.specifier.contains(image[name], prereleases=True):
                print(f"  note: {wheel_name(w)} asks for {req}; the image has {name} {image[name]} (--no-deps install)")
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("groups", nargs="*", help="groups (pins/<group>.txt); default all")
    ap.add_argument("--image", default=str(ROOT.parent / "shared/tools/device-pip-list.txt"),
                    help="the device image's pip list (default: ../shared/tools/device-pip-list.txt)")
    ap.add_argument("--dest", default=str(ROOT / ".wheels/peers"))
    a = ap.parse_args()
    image_path = pathlib.Path(a.image)
    if not image_path.exists():
        image_path = pathlib.Path("/work/shared/tools/device-pip-list.txt")
    image = device_image(image_path)
    groups = a.groups or sorted(p.stem for p in (HERE / "pins").glob("*.txt"))
    problems, total = [], 0
    for group in groups:
        pins, ignored = read_pins(HERE / "pins" / f"{group}.txt")
        dest = pathlib.Path(a.dest) / group
        fetch(group, pins, dest)
        problems += audit(group, dest, pins, ignored, image)
        size = sum(w.stat().st_size for w in dest.glob("*.whl"))
        total += size
        print(f"{group}: {len(pins)} wheels, {size / 2**20:.1f} MiB in {dest}")
    print(f"total {total / 2**20:.1f} MiB")
    for p in problems:
        print("PROBLEM:", p)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
