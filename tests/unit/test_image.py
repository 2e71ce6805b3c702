"""The container image, without a Docker engine: the Dockerfile's build stage replayed in a fresh venv.

The replay follows the Dockerfile itself: its COPY lines say which files go where, its RUN lines are run with
their paths moved under a temporary directory (and pip's cache left on, for speed). A RUN line it cannot replay
fails the test, so the Dockerfile and this test cannot drift apart. Then, from a directory outside the repository,
`import payments_app.worker` must work, the dev tooling (`devtools`, `bench`, the `payments` command) must be absent,
and every installed package must be the lock's.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "image" / "requirements.lock"
VENV = "/opt/venv"
PIP_INSTALL = f"pip --python {VENV}/bin/python install"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def dockerfile() -> tuple[dict[str, str], list[Stage]]:
    """The Dockerfile's ARGs (before the first FROM) and its stages, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction, rest = instruction.upper(), " ".join(rest.split())
        if instruction == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif instruction == "FROM":
            base, _, name = rest.partition(" AS ")
            for arg, value in args.items():
                base = base.replace("${" + arg + "}", value)
            stages.append(Stage(base, name or None))
        else:
            stages[-1].instructions.append((instruction, rest))
    return args, stages


def read_lock() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every requirement in the lock file."""
    entries: dict[str, tuple[str, list[str]]] = {}
    for block in re.sub(r"\\\n", " ", LOCK.read_text()).splitlines():
        block = block.split("#", 1)[0].strip()
        if not block:
            continue
        pin, *options = block.split()
        name, _, version = pin.partition("==")
        hashes = [option.removeprefix("--hash=") for option in options if option.startswith("--hash=sha256:")]
        assert version and len(hashes) == len(options), f"not an exact pin with hashes: {block[:80]}"
        entries[canonicalize_name(name)] = (version, hashes)
    return entries


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def build_backend() -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in pyproject()["build-system"]["requires"]}


# ---- without building: the Dockerfile and the lock ----


def test_every_base_image_is_pinned_by_digest() -> None:
    _, stages = dockerfile()
    assert stages
    for stage in stages:
        assert re.fullmatch(r"python:3\.11-slim@sha256:[0-9a-f]{64}", stage.base), stage.base


def test_the_lock_pins_pyprojects_dependencies_and_hashes_every_package() -> None:
    # `make lock` pins the transitive rest at the versions installed in .venv; a fresh .venv may resolve newer
    # ones (pyproject pins only the direct dependencies), so that is not asserted here.
    lock = read_lock()
    for requirement in map(Requirement, pyproject()["project"]["dependencies"]):
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{requirement} is not pinned in pyproject.toml"
        assert lock[canonicalize_name(requirement.name)][0] == spec.version, requirement.name
    assert build_backend() <= set(lock)
    assert all(hashes for _, hashes in lock.values())


def test_the_image_runs_as_the_pods_user_with_a_data_dir_it_owns_and_the_pods_command() -> None:
    _, stages = dockerfile()
    final = dict(stages[-1].instructions)  # the last of each instruction wins
    statefulset = next(
        doc
        for doc in yaml.safe_load_all((ROOT / "k8s" / "statefulset.yaml").read_text())
        if doc and doc["kind"] == "StatefulSet"
    )
    pod = statefulset["spec"]["template"]["spec"]
    uid, gid = (int(part) for part in final["USER"].split(":"))
    assert uid > 0 and (uid, gid) == (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"])
    environment = dict(
        item.split("=", 1) for item in " ".join(v for i, v in stages[-1].instructions if i == "ENV").split()
    )
    assert environment["PAYMENTS_DATA_DIR"] == "/data"
    assert any(
        i == "RUN" and f"install -d -o {uid} -g {gid}" in v and v.endswith(" /data") for i, v in stages[-1].instructions
    )
    (container,) = pod["containers"]
    assert json.loads(final["CMD"]) == container["command"]
    assert sorted(int(port) for port in final["EXPOSE"].split()) == sorted(
        p["containerPort"] for p in container["ports"]
    )


def test_the_image_installs_only_hashed_packages_and_builds_the_project_without_fetching() -> None:
    _, stages = dockerfile()
    runs = [value for instruction, value in stages[0].instructions if instruction == "RUN"]
    (lock_install,) = [run for run in runs if "-r " in run]
    assert lock_install.startswith(PIP_INSTALL) and {"--require-hashes", "--no-deps"} <= set(lock_install.split())
    (project_install,) = [run for run in runs if run.endswith(" .")]
    assert project_install.startswith(PIP_INSTALL)
    assert {"--no-deps", "--no-build-isolation", "--no-index"} <= set(project_install.split())


# ---- the build stage, replayed ----


class Replay:
    """The build stage's COPY and RUN lines, with the image's file system at `root`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workdir = "/"

    def path(self, image_path: str) -> Path:
        absolute = image_path if image_path.startswith("/") else f"{self.workdir.rstrip('/')}/{image_path}"
        return self.root / absolute.lstrip("/")

    def copy(self, value: str) -> None:
        assert not value.startswith("--"), f"COPY options are not replayed: {value}"
        *sources, destination = value.split()
        into_directory = destination.endswith("/") or len(sources) > 1
        for source in sources:
            origin = ROOT / source
            target = self.path(destination) / origin.name if into_directory else self.path(destination)
            target.parent.mkdir(parents=True, exist_ok=True)
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(origin, target)

    def run(self, value: str) -> None:
        words = shlex.split(value)
        if words[:3] == ["python", "-m", "venv"]:
            command = [sys.executable, *words[1:]]
        elif value.startswith(PIP_INSTALL):
            command = [sys.executable, "-m", *words]  # this venv's pip (it has --python), pip's cache on
        else:
            raise AssertionError(f"test_image.py does not know how to replay `RUN {value}`")
        command = [command[0], *(str(self.path(word)) if word.startswith("/") else word for word in command[1:])]
        cwd = self.path(self.workdir)
        cwd.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
        assert result.returncode == 0, f"RUN {value}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.mark.image
def test_the_image_file_set_imports_the_worker_and_holds_no_dev_tooling(tmp_path: Path) -> None:
    _, stages = dockerfile()
    replay = Replay(tmp_path / "image")
    for instruction, value in stages[0].instructions:
        if instruction == "WORKDIR":
            replay.workdir = value
        elif instruction == "COPY":
            replay.copy(value)
        elif instruction == "RUN":
            replay.run(value)
        else:
            assert instruction in ("ENV",), f"{instruction} is not replayed"
    python = replay.path(f"{VENV}/bin/python")
    data = tmp_path / "data"
    data.mkdir()
    # The final stage's environment: the venv first on PATH, the data dir, nothing from this session.
    environment = {"PATH": f"{python.parent}:/usr/bin:/bin", "PAYMENTS_DATA_DIR": str(data), "HOME": str(tmp_path)}

    def run(*command: str | Path) -> str:
        result = subprocess.run(
            list(map(str, command)), cwd=data, env=environment, capture_output=True, text=True, timeout=120, check=False
        )
        assert result.returncode == 0, f"{command}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    imported = run(python, "-c", "import payments_app, payments_app.worker; print(payments_app.__file__)")
    assert Path(imported.strip()).is_relative_to(replay.path(VENV)), imported
    absent = run(
        python, "-c", "import importlib.util as u; print([m for m in ('devtools', 'bench') if u.find_spec(m)])"
    )
    assert absent.strip() == "[]", absent
    assert not (python.parent / "payments").exists()
    run(sys.executable, "-m", "pip", "--python", python, "check")

    installed = json.loads(
        run(
            python,
            "-c",
            "import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
        )
    )
    installed = {canonicalize_name(name): version for name, version in installed.items()}
    assert installed.pop("kafka-payments") == pyproject()["project"]["version"]
    lock = read_lock()
    assert installed == {name: version for name, (version, _) in lock.items()}
