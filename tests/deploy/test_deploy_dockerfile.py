"""Static checks of deploy/Dockerfile (no Docker engine here): stages, user, healthcheck, torch pin."""

import fnmatch
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BUILD_TOOLS = re.compile(r"\b(pip install|apt-get|apk add|gcc|g\+\+|make|build-essential)\b")


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [argument for kw, argument in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with continuation lines joined and comments dropped."""
    logical, pending = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        if (pending + line).strip():
            logical.append(pending + line)
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, argument = line.strip().partition(" ")
        keyword, argument = keyword.upper(), argument.strip()
        if keyword == "FROM":
            words = argument.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m[1], m[0]), words[0])
            stages.append(Stage(name=words[2] if len(words) > 2 else str(len(stages)), base=base))
        elif not stages and keyword == "ARG":
            name, _, default = argument.partition("=")
            global_args[name] = default
        elif stages:
            stages[-1].instructions.append((keyword, argument))
    return global_args, stages


def final_stages(stages: list[Stage]) -> list[Stage]:
    """The stages an image is tagged from, and the stages they are built FROM."""
    by_name = {stage.name: stage for stage in stages}
    chain = []
    for target in ("worker", "trainer"):
        stage = by_name[target]
        while stage is not None:
            chain.append(stage)
            stage = by_name.get(stage.base)
    return chain


@pytest.fixture(scope="module")
def dockerfile(repo: Path) -> tuple[dict[str, str], list[Stage]]:
    return parse_dockerfile((repo / "deploy/Dockerfile").read_text())


@pytest.fixture(scope="module")
def stages(dockerfile: tuple[dict[str, str], list[Stage]]) -> dict[str, Stage]:
    return {stage.name: stage for stage in dockerfile[1]}


def test_multi_stage_with_worker_as_the_default_target(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    names = [stage.name for stage in stages]
    assert len(stages) >= 3 and {"worker", "trainer"} <= set(names)
    assert names[-1] == "worker", "`docker build` without --target must produce the worker"


def test_base_images_are_pinned_python_311(dockerfile: tuple[dict[str, str], list[Stage]]) -> None:
    _, stages = dockerfile
    external = {stage.base for stage in stages if ":" in stage.base}
    assert external, "the base image is pinned through ARG PYTHON_IMAGE"
    for image in external:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image), image


def test_torch_is_pinned_to_constraints_and_comes_from_the_cpu_index(
    dockerfile: tuple[dict[str, str], list[Stage]], repo: Path
) -> None:
    global_args, _ = dockerfile
    pinned = re.search(r"^torch==(\S+)", (repo / "constraints.txt").read_text(), re.MULTILINE)
    assert pinned and global_args["TORCH_VERSION"] == pinned[1]
    assert global_args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    text = (repo / "deploy/Dockerfile").read_text()
    assert '--index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"' in text
    assert text.count("-c constraints.txt") == 2, "every project install honours the torch pin"


def test_runtime_images_have_no_build_tools_or_installers(stages: dict[str, Stage]) -> None:
    for stage in final_stages(list(stages.values())):
        for command in stage.args("RUN"):
            assert not BUILD_TOOLS.search(command), f"{stage.name}: {command}"
    for target in ("worker", "trainer"):
        copies = stages[target].args("COPY")
        assert any(copy.startswith("--from=builder-") and "/opt/venv" in copy for copy in copies)


def test_builders_drop_pip_from_the_copied_venv(stages: dict[str, Stage]) -> None:
    for builder in ("builder-worker", "builder-trainer"):
        (install,) = stages[builder].args("RUN")
        assert "pip uninstall -y pip" in install


def test_images_run_as_a_numeric_non_root_user(stages: dict[str, Stage]) -> None:
    for target in ("worker", "trainer"):
        user = stages[target].args("USER")[-1]
        uid = user.split(":")[0]
        assert uid.isdigit() and int(uid) != 0, f"{target}: USER {user}"


def test_worker_healthcheck_calls_vrae_worker_check(stages: dict[str, Stage]) -> None:
    (healthcheck,) = stages["worker"].args("HEALTHCHECK")
    options, _, command = healthcheck.partition("CMD")
    assert "--interval=" in options and "--start-period=" in options
    timeout_s = int(re.search(r"--timeout=(\d+)s", options)[1])
    # `check` skips torch (pinned in tests/unit/test_worker_dependencies.py) but still starts Python.
    assert timeout_s >= 3, "leave the interpreter's start-up room on a throttled CPU"
    assert command.strip() == '["vrae-worker", "check"]'
    assert stages["worker"].args("ENTRYPOINT") == ['["vrae-worker"]']


def test_image_environment_names_only_real_worker_settings(
    stages: dict[str, Stage], worker_env_names: frozenset[str]
) -> None:
    names = {pair.split("=", 1)[0] for stage in stages.values() for env in stage.args("ENV")
             for pair in shlex.split(env)}
    assert "VRAE_MODEL__PATH" in names
    assert sorted(name for name in names if name.startswith("VRAE_") and name not in worker_env_names) == []


def test_trainer_installs_the_train_extra(stages: dict[str, Stage]) -> None:
    (install,) = stages["builder-trainer"].args("RUN")
    assert re.search(r'"\.\[[^\]]*\btrain\b[^\]]*\]"', install)


def test_every_copied_file_exists_and_passes_the_dockerignore(stages: dict[str, Stage], repo: Path) -> None:
    ignore = [line for line in (repo / "deploy/Dockerfile.dockerignore").read_text().splitlines()
              if line and not line.startswith("#")]
    for stage in stages.values():
        for copy in stage.args("COPY"):
            words = [word for word in shlex.split(copy) if not word.startswith("--")]
            if copy.startswith("--from="):
                continue
            for source in words[:-1]:
                # pyproject.toml names README.md as the long description, so the build needs it.
                assert (repo / source).exists() or source == "README.md", f"{stage.name}: {source} missing"
                assert included(source.rstrip("/"), ignore), f"{stage.name}: {source} is dockerignored"


def included(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; `!pattern` re-includes."""
    keep = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        bare = pattern.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, bare) or path.startswith(bare + "/"):
            keep = negated
    return keep


def test_dockerignore_rule_reincludes_whitelisted_paths() -> None:
    patterns = ["*", "!worker/", "**/__pycache__"]
    assert included("worker", patterns)
    assert not included("tests", patterns)
