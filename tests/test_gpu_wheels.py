"""The GPU check's wheel list (bench/gpu/wheels.txt) and its script (bench/gpu/check.sh), without network.

    pytest tests/test_gpu_wheels.py -q      # ~25 s: one dry run of the whole check

The list must name every runtime dependency of posttrain (pyproject's `dependencies` and the
`deepspeed` and `serve` extras) and what those need in turn, as carried (a pin), already on the GPU
machine (`#present`) or deliberately left out (`#skip`): a new dependency cannot be forgotten. The
script's dry run checks .whl/ when `make gpu-wheels` has filled it (CI does not: then `--no-wheels`).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
LIST = REPO / "bench" / "gpu" / "wheels.txt"
SCRIPT = REPO / "bench" / "gpu" / "check.sh"
WHL = REPO / ".whl"
KINDS = ("download", "build", "build-cp312")  # what `make gpu-wheels` does with a pin
# The GPU machine's Python, for the markers of what its packages require.
GPU_ENV = {
    "python_version": "3.12",
    "python_full_version": "3.12.3",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}

PIN = re.compile(r"^([A-Za-z0-9._-]+)==(\S+)\s+#\s*([a-z0-9-]+):\s*(\S.*)$")
NAMED = re.compile(r"^#(present|skip)\s+([A-Za-z0-9._-]+)\s+#\s*(\S.*)$")


def parse_list() -> tuple[dict[str, tuple[str, str]], dict[str, str], dict[str, str]]:
    """(carried {name: (version, kind)}, present {name: why}, skipped {name: why}); names canonical."""
    carried: dict[str, tuple[str, str]] = {}
    present: dict[str, str] = {}
    skipped: dict[str, str] = {}
    seen: set[str] = set()
    for n, line in enumerate(LIST.read_text().splitlines(), 1):
        line = line.rstrip()
        if not line or (line.startswith("#") and not re.match(r"^#(present|skip)\b", line)):
            continue
        pin, named = PIN.match(line), NAMED.match(line)
        assert pin or named, (
            f"wheels.txt:{n}: not `NAME==VERSION  # kind: why` nor `#present|#skip NAME  # why`: {line}"
        )
        name = canonicalize_name(pin.group(1) if pin else named.group(2))
        assert name not in seen, f"wheels.txt:{n}: {name} is named twice"
        seen.add(name)
        if pin:
            assert pin.group(3) in KINDS, f"wheels.txt:{n}: kind {pin.group(3)!r} is none of {KINDS}"
            carried[name] = (pin.group(2), pin.group(3))
        elif named.group(1) == "present":
            present[name] = named.group(3)
        else:
            skipped[name] = named.group(3)
    return carried, present, skipped


def pyproject_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in ("deepspeed", "serve"):
        reqs += project["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def test_list_parses_and_every_entry_says_why():
    carried, present, _ = parse_list()
    assert carried and present
    for name, (version, _kind) in carried.items():
        Version(version)  # a real, exact version
        assert name not in present


def test_every_pyproject_dependency_is_carried_or_on_the_machine():
    carried, present, skipped = parse_list()
    for req in pyproject_requirements():
        name = canonicalize_name(req.name)
        assert name not in skipped, f"{req}: a direct dependency cannot be skipped"
        assert name in carried or name in present, (
            f"pyproject's {req} is neither carried nor '#present' in {LIST.relative_to(REPO)}: add it there "
            "(a pin with `# download: why`, or `#present NAME  # why` if the GPU machine has it, see KINDS.md)"
        )
        if name in carried:
            assert req.specifier.contains(carried[name][0], prereleases=True), (
                f"wheels.txt pins {name}=={carried[name][0]}, outside pyproject's {req}"
            )


def wheel_metadata() -> dict[str, list[str]]:
    """The METADATA of each wheel in .whl/ (what will run there), by canonical name."""
    out = {}
    if WHL.is_dir():
        for p in WHL.glob("*.whl"):
            with zipfile.ZipFile(p) as z:
                meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
                text = z.read(meta).decode()
            out[canonicalize_name(p.name.split("-")[0])] = [
                line.split(":", 1)[1].strip()
                for line in text.splitlines()
                if line.startswith("Requires-Dist:")
            ]
    return out


def requires_of(name: str, carried: dict, wheels: dict) -> list[str] | None:
    """What NAME requires, from the carried wheel, else from the installed distribution when it is the
    pinned version (or not pinned); None when unknown here."""
    if name in wheels:
        return wheels[name]
    try:
        dist = md.distribution(name)
    except md.PackageNotFoundError:
        return None
    if name in carried and dist.version != carried[name][0]:
        return None
    return list(dist.requires or [])


def test_dependency_tree_is_covered_and_pins_fit_together():
    """Walks the requirements recursively (markers as on the GPU machine's CPython 3.12, Linux x86-64):
    every name is carried, present or skipped, and each pin satisfies what asks for it."""
    carried, present, skipped = parse_list()
    wheels = wheel_metadata()
    known = set(carried) | set(present) | set(skipped)
    queue = [(req, "posttrain") for req in pyproject_requirements()]
    visited: set[tuple[str, frozenset]] = set()
    unknown, conflicts = [], []
    while queue:
        req, parent = queue.pop()
        name = canonicalize_name(req.name)
        if name not in known:
            unknown.append(f"{name} (needed by {parent}: {req})")
            continue
        if name in carried and not req.specifier.contains(carried[name][0], prereleases=True):
            conflicts.append(f"{name}=={carried[name][0]} does not satisfy {parent}'s {req}")
        if name in skipped or (name, frozenset(req.extras)) in visited:
            continue
        visited.add((name, frozenset(req.extras)))
        for r in requires_of(name, carried, wheels) or []:
            sub = Requirement(r)
            extras = set(req.extras) | {""}
            if sub.marker is None or any(sub.marker.evaluate({**GPU_ENV, "extra": e}) for e in extras):
                queue.append((sub, name))
    assert not unknown, (
        f"not in {LIST.relative_to(REPO)}: "
        + "; ".join(sorted(set(unknown)))
        + ". Carry it (a pin) or name it `#present`/`#skip` with the reason."
    )
    assert not conflicts, "; ".join(sorted(set(conflicts)))


def test_makefile_reads_the_same_pins():
    """`make gpu-wheels` picks the pins of each kind with a sed expression: the same set as this parser."""
    text = (REPO / "Makefile").read_text()
    assert re.search(r"^\.PHONY:.*\bgpu-wheels\b", text, re.M)
    line = re.search(r"^whl_kind\s*=\s*\$\$\((sed .*) \$\(GPU_WHEELS\)\)$", text, re.M)
    assert line, "Makefile: whl_kind not found"
    carried, _, _ = parse_list()
    for kind in KINDS:
        cmd = line.group(1).replace("$(1)", kind).replace("\\#", "#") + f" {LIST}"
        got = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True).stdout.split()
        want = sorted(f"{n}=={v}" for n, (v, k) in carried.items() if k == kind)
        assert sorted(f"{canonicalize_name(g.split('==')[0])}=={g.split('==')[1]}" for g in got) == want, kind
    assert ".whl/" in (REPO / ".gitignore").read_text().split()


# --- bench/gpu/check.sh ------------------------------------------------------------------------


def check(tmp_path: Path, *args: str, env: dict | None = None, timeout: int = 120):
    """Runs check.sh; returns (exit status, output, gpu_check.json or None)."""
    out = tmp_path / "out"
    full_env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), **(env or {})}
    full_env.pop("PYTEST_ADDOPTS", None)
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    report = out / "gpu_check.json"
    return (
        proc.returncode,
        proc.stdout + proc.stderr,
        json.loads(report.read_text()) if report.exists() else None,
    )


def statuses(report: dict) -> dict[str, str]:
    return {s["name"]: s["status"] for s in report["steps"]}


def test_script_syntax_and_help():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    help_text = subprocess.run(
        ["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--dry-run" in help_text and "gpu_check.json" in help_text
    bad = subprocess.run(["bash", str(SCRIPT), "--only", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "no step 'nope'" in bad.stderr


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The whole dry run once: with .whl/ when `make gpu-wheels` made it, else with --no-wheels."""
    args = ["--dry-run"] if WHL.is_dir() else ["--dry-run", "--no-wheels"]
    return check(tmp_path_factory.mktemp("dry"), *args, timeout=240)


def test_dry_run_skips_the_gpu_steps_cleanly(dry_run):
    rc, output, report = dry_run
    assert rc == 0, output[-3000:]
    assert report is not None and report["mode"] == "dry-run"
    st = statuses(report)
    assert list(st) == ["wheels", "install", "versions", "deps", "imports", "gpu-tests", "step"]
    assert "FAIL" not in st.values(), output[-3000:]
    assert st["versions"] == st["deps"] == st["imports"] == "PASS"
    assert st["gpu-tests"] == "SKIP"  # CUDA hidden: the gpu-marked tests skip
    assert st["step"] == "SKIP"
    assert report["versions"]["gpu"] == "none" and report["versions"]["torch"]
    for name in ("torch", "transformers", "trl"):
        assert re.search(rf"\b{name}\b", output)
    assert re.search(r"^gpu_check: \d+ PASS, 0 FAIL, \d+ SKIP", output, re.M)


@pytest.mark.skipif(not WHL.is_dir(), reason="no .whl/ here (`make gpu-wheels` fills it; CI does not)")
def test_dry_run_checks_the_wheels(dry_run):
    rc, output, report = dry_run
    st = statuses(report)
    assert st["wheels"] == "PASS" and st["install"] == "PASS", output[-3000:]
    carried, _, _ = parse_list()
    assert report["wheels"]["count"] == len(carried)
    assert report["wheels"]["mib"] < 64
    assert re.search(r"wheels: \d+ files, [0-9.]+ MiB", output)


def test_missing_wheel_folder_is_reported(tmp_path):
    rc, output, report = check(
        tmp_path, "--dry-run", "--only", "wheels,install", env={"WHL_DIR": str(tmp_path / "none")}
    )
    assert rc == 1
    assert "make gpu-wheels" in output and "--no-wheels" in output
    assert statuses(report) == {"wheels": "FAIL", "install": "SKIP"}


def test_wheel_folder_against_the_list(tmp_path):
    """A missing pin, another version and an extra wheel are each named."""
    carried, _, _ = parse_list()
    folder = tmp_path / "whl"
    folder.mkdir()
    names = sorted(carried)
    for name in names[2:]:
        (folder / f"{name.replace('-', '_')}-{carried[name][0]}-py3-none-any.whl").write_bytes(b"x")
    (folder / f"{names[1].replace('-', '_')}-0.0.1-py3-none-any.whl").write_bytes(b"x")
    (folder / "surplus-1.0-py3-none-any.whl").write_bytes(b"x")
    rc, output, report = check(tmp_path, "--dry-run", "--only", "wheels", env={"WHL_DIR": str(folder)})
    assert rc == 1 and statuses(report) == {"wheels": "FAIL"}
    problems = " | ".join(report["wheels"]["problems"])
    assert f"missing: {names[0]}==" in problems
    assert f"{names[1]} 0.0.1 but" in problems
    assert "extra: surplus-1.0" in problems
