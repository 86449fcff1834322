"""dvc.yaml against the code it runs, without running DVC.

DVC reruns a stage when a declared dep or param changes, and only then. So each stage must
declare exactly what its module reads: an undeclared param is a stale result waiting to
happen, an over-declared one reruns hours of teacher training for nothing. These tests read
the stage modules' source (AST) and compare it with dvc.yaml:

- params: the `Params` sections a module reads (`load_params(...).data`, `params.data`)
  equal the sections its stage declares. Per-task sections (teacher, augment, student) are
  declared whole by `configure` alone; a stage reads its task's values from configure's file
  (`load_settings(TeacherParams, task)`) and declares that file, so a change for one task
  reruns only that task's chain.
- paths: every path in dvc.yaml is a `pipeline/paths.py` path, every artifact path the module
  uses lies inside a declared dep or out, every declared dep or out is used, and every data
  dep is some stage's output.
- code: the pipeline modules only one stage runs are deps of that stage.
- commands: each stage runs `python -m pipeline STAGE` with its own task, and the default
  params file (the one DVC tracks).

The smoke profile (profiles/smoke.args) is checked here too: it must validate and win over
every per-task value.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pipeline import paths
from pipeline.cli import app
from pipeline.params import DatasetParams, Params, PerTaskSection, parse_params
from pipeline.tasks import TASKS, TaskSpec, get_task
from pipeline.io import read_yaml

from smoke_profile import SMOKE_ARGS, overrides, smoke_args, with_overrides

ROOT = Path(__file__).resolve().parents[1]
DVC_YAML = read_yaml(ROOT / "dvc.yaml")
PARAMS_YAML = read_yaml(ROOT / "params.yaml")
TOP_LEVEL_KEYS = ("tasks", "datasets")  # params.yaml keys outside any section that a stage may read
# Params methods that read sections: `task(name)` the declarations, `arm`/`arm_augment` an
# ablation row's settings resolved over the task's.
READ_THROUGH = {"task": {"datasets"}, "arm": {"ablation", "student"}, "arm_augment": {"ablation", "augment"}}
PARAMS_LOADERS = {"load_params", "parse_params"}
# The project declares no dataset of its own, so the `prepare_dataset` template is checked
# against this one.
EXAMPLE_DATASET = {"example": {"dir": "data/raw/example", "train": "train.csv", "dev": "dev.csv", "text": "text", "label": "label"}}
DATASETS = PARAMS_YAML["datasets"] or EXAMPLE_DATASET
# Every task a stage expands over, the example dataset included when it stands in.
RUN_TASKS = PARAMS_YAML["tasks"] + [name for name in DATASETS if name not in PARAMS_YAML["tasks"]]
RAW_DATA = "${item.dir}"  # a dataset's raw files: DVC-tracked data, no stage's output
# The ablation's stages are checked for its tasks, or for SST-2 where it runs none.
ABLATION = PARAMS_YAML["ablation"]
ABLATION_TASKS = ABLATION["tasks"] or ["sst2"]
ABLATION_ROWS = [*paths.STUDENT_VARIANTS, *ABLATION["reused_logits"], *ABLATION["new_logits"]]
# What a template list of params.yaml expands to here.
TEMPLATE_LISTS = {
    "${tasks}": RUN_TASKS,
    "${ablation.tasks}": ABLATION_TASKS,
    "${ablation.reused_logits}": list(ABLATION["reused_logits"]),
    "${ablation.new_logits}": list(ABLATION["new_logits"]),
}
# Stages that run another stage's command: your datasets' prepare, and the ablation's
# students, transfer sets and logits (`--arm`).
COMMAND_OF = {
    "prepare_dataset": "prepare",
    "ablation_seeds": "student",
    "ablation_reused": "student",
    "ablation_augment": "augment",
    "ablation_label": "label",
    "ablation_student": "student",
}


def task_spec(name: str) -> TaskSpec:
    return get_task(name) if name in TASKS else DatasetParams.model_validate(DATASETS[name]).to_task(name)


@dataclass(frozen=True)
class Stage:
    """One dvc.yaml stage with its template variable (`item`, `key` or `item.task`)."""

    name: str
    body: dict[str, Any]
    item_var: str | None  # how the stage's task is spelled in templates
    matrix: dict[str, Any] | None
    over: str | None = None  # the params.yaml list (or mapping) a foreach stage expands over

    @property
    def command(self) -> str:
        """The `python -m pipeline` command it runs (prepare_dataset runs prepare, ...)."""
        return shlex.split(self.body["cmd"])[3]

    @property
    def has_arm(self) -> bool:
        return self.matrix is not None and "arm" in self.matrix

    @property
    def module(self) -> Path:
        return ROOT / "pipeline" / f"{self.command}.py"

    def items(self) -> list[dict[str, str]]:
        """Template values of every expanded stage: [{"task": .., "variant": ..}, ...]."""
        if self.matrix is not None:
            keys = list(self.matrix)
            values = [TEMPLATE_LISTS[v] if isinstance(v, str) else v for v in self.matrix.values()]
            return [dict(zip(keys, combo)) for combo in itertools.product(*values)]
        if self.over == "datasets":
            return [{"task": name, "dir": spec["dir"]} for name, spec in DATASETS.items()]
        if self.over is not None:
            return [{"task": t} for t in TEMPLATE_LISTS.get(f"${{{self.over}}}", PARAMS_YAML.get(self.over))]
        return [{}]

    def render(self, text: str, item: dict[str, str]) -> str:
        if self.matrix is not None:
            for key, value in item.items():
                text = text.replace(f"${{item.{key}}}", value)
        elif self.over == "datasets":
            text = text.replace("${key}", item["task"]).replace(RAW_DATA, item["dir"])
        elif self.item_var is not None:
            text = text.replace("${item}", item["task"])
        assert "${" not in text, f"{self.name}: unresolved template in {text!r}"
        return text

    def entries(self, field: str) -> list[str]:
        """Paths of deps/outs/metrics/plots (entries may be `path` or `{path: options}`)."""
        return [e if isinstance(e, str) else next(iter(e)) for e in self.body.get(field, [])]

    def declared_params(self) -> list[str]:
        return list(self.body.get("params", []))


def load_stages() -> list[Stage]:
    stages = []
    for name, spec in DVC_YAML["stages"].items():
        if "foreach" in spec:
            over = spec["foreach"].removeprefix("${").removesuffix("}")
            assert over in ("tasks", "glue", "datasets", "ablation.tasks"), (
                f"{name}: stages expand over tasks, glue, datasets or ablation.tasks"
            )
            stages.append(Stage(name, spec["do"], "${key}" if over == "datasets" else "${item}", None, over))
        elif "matrix" in spec:
            assert spec["matrix"].get("task") in ("${tasks}", "${ablation.tasks}"), (
                f"{name}: matrix needs task: ${{tasks}} (or ${{ablation.tasks}})"
            )
            stages.append(Stage(name, spec, "${item.task}", spec["matrix"]))
        else:
            stages.append(Stage(name, spec, None, None))
    return stages


STAGES = load_stages()
STAGE_IDS = [s.name for s in STAGES]


# --------------------------------------------------------------------------- reading the code


def _parents(tree: ast.AST) -> dict[ast.AST, ast.AST]:
    return {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}


def _is_loader_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
    return name in PARAMS_LOADERS


def _is_params_annotation(node: ast.expr | None) -> bool:
    return node is not None and ast.unparse(node) in {"Params", "params.Params", "pipeline.params.Params"}


def sections_read(source: str) -> set[str]:
    """The `Params` attributes (sections, `tasks`) a module reads.

    A whole `Params` object comes from `load_params(...)`/`parse_params(...)` or an argument
    annotated `Params`; it may only be used as `<it>.<section>`. Handing it on whole (to a
    helper, a log line, file metadata) would read every section, which no stage may do.
    """
    tree = ast.parse(source)
    parent = _parents(tree)
    read: set[str] = set()

    def use(node: ast.AST, what: str) -> None:
        holder = parent[node]
        if isinstance(holder, ast.Attribute) and holder.value is node:
            read.add(holder.attr)
        else:
            raise AssertionError(f"line {node.lineno}: {what} is used whole ({ast.unparse(holder)})")

    for func in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
        whole: set[str] = {
            a.arg for a in (*func.args.args, *func.args.kwonlyargs) if _is_params_annotation(a.annotation)
        }
        for node in ast.walk(func):
            if _is_loader_call(node):
                holder = parent[node]
                if isinstance(holder, ast.Assign) and [type(t) for t in holder.targets] == [ast.Name]:
                    whole.add(holder.targets[0].id)
                else:
                    use(node, ast.unparse(node))
        for node in ast.walk(func):
            if isinstance(node, ast.Name) and node.id in whole and isinstance(node.ctx, ast.Load):
                use(node, f"params object {node.id!r}")
    return set().union(*(READ_THROUGH.get(name, {name}) for name in read))


def settings_loaded(source: str) -> set[str]:
    """The per-task sections a module reads from configure's files: `load_settings(XParams, ..)`."""
    sections = {
        cls.__name__: name
        for name in Params.model_fields
        if isinstance(cls := Params.model_fields[name].annotation, type) and issubclass(cls, PerTaskSection)
    }
    return {
        sections[node.args[0].id]
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and ast.unparse(node.func) == "load_settings"
    }


def arm_settings_loaded(source: str) -> set[str]:
    """The sections a module reads from an ablation row's files: `load_settings(.., arm=..)`
    and `load_arm(..)` (the row's student.json)."""
    calls = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)]
    loaded = {"student" for node in calls if ast.unparse(node.func) == "load_arm"}
    return loaded | {
        section
        for node in calls
        if ast.unparse(node.func) == "load_settings" and any(k.arg == "arm" for k in node.keywords)
        for section in settings_loaded(ast.unparse(node))
    }


def declared_sections(stage: Stage) -> set[str]:
    return {entry.split(".")[0] for entry in stage.declared_params()}


@dataclass(frozen=True)
class PathUse:
    """A use of a `pipeline.paths` member, with the arguments spelled as string literals."""

    name: str
    literals: tuple[tuple[str, str], ...] = ()  # (argument, value), e.g. (("split", "train"),)


def paths_used(source: str) -> set[PathUse]:
    """Uses of `pipeline.paths` members in a module (`paths.x(...)`, or `x(...)` imported)."""
    tree = ast.parse(source)
    parent = _parents(tree)
    imported = {  # local name -> name in pipeline.paths
        alias.asname or alias.name: alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module == "pipeline.paths"
        for alias in node.names
    }
    uses = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "paths":
            name = node.attr
        elif isinstance(node, ast.Name) and node.id in imported:
            name = imported[node.id]
        else:
            continue
        call, member = parent.get(node), getattr(paths, name)
        literals = {}
        if isinstance(call, ast.Call) and call.func is node and inspect.isfunction(member):
            arguments = [*zip(inspect.signature(member).parameters, call.args)]
            arguments += [(k.arg, k.value) for k in call.keywords]
            literals = {
                a: v.value for a, v in arguments if isinstance(v, ast.Constant) and isinstance(v.value, str)
            }
        uses.add(PathUse(name, tuple(sorted(literals.items()))))
    for node in ast.walk(tree):  # pipeline.io / pipeline.params helpers that read artifacts
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            uses |= set(HELPER_PATHS.get(node.func.id, ()))
            if node.func.id == "load_settings":
                (section,) = settings_loaded(ast.unparse(node))
                uses.add(PathUse("settings_file", (("name", section),)))
            for section in arm_settings_loaded(ast.unparse(node)) if node.func.id in ("load_settings", "load_arm") else ():
                uses.add(PathUse("arm_settings_file", (("name", section),)))
    return uses


# What the helpers that stage modules call read (pipeline/io.py), as uses of pipeline.paths.
HELPER_PATHS = {
    "declared_task": (PathUse("settings_file", (("name", "source"),)),),
    "load_task": (PathUse("settings_file", (("name", "task"),)), PathUse("prepared_split", (("split", "train"),))),
}


def takes_an_arm(use: PathUse) -> bool:
    """Whether the path belongs to an ablation row (`paths.arm_*(task, arm, ..)`)."""
    member = getattr(paths, use.name)
    return inspect.isfunction(member) and "arm" in inspect.signature(member).parameters


def path_values(use: PathUse, item: dict[str, str]) -> Iterator[Path]:
    """What a use of `paths.<name>` can give in a stage item: its task (else every task), the
    literal arguments, else every split and the item's variant (else every variant)."""
    member = getattr(paths, use.name)
    if isinstance(member, Path):
        yield member
        return
    if not inspect.isfunction(member) or member.__module__ != paths.__name__:
        return  # not a path: STUDENT_VARIANTS, imported names
    if inspect.signature(member).return_annotation not in ("Path", Path):
        return  # a helper over paths (prepared_eval_splits), not a path itself
    variants = [item["variant"]] if "variant" in item else list(paths.STUDENT_VARIANTS)
    for task in [item["task"]] if "task" in item else RUN_TASKS:
        choices = {"task": [task], "split": [s.name for s in task_spec(task).splits], "variant": variants}
        choices["name"] = ["source", "task", *Params.PER_TASK_SECTIONS]  # paths.settings_file
        choices["arm"] = [item["arm"]] if "arm" in item else ABLATION_ROWS
        choices["seed"] = ABLATION["seeds"]
        choices |= {argument: [value] for argument, value in use.literals}
        arg_names = inspect.signature(member).parameters
        for combo in itertools.product(*(choices[a] for a in arg_names)):
            yield member(*combo)


def all_paths(item: dict[str, str]) -> set[Path]:
    """Every path pipeline/paths.py can give for this stage item."""
    return {p for name in dir(paths) if not name.startswith("_") for p in path_values(PathUse(name), item)}


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize("stage", STAGES, ids=STAGE_IDS)
def test_stage_declares_exactly_the_sections_its_module_reads(stage: Stage):
    read = sections_read(stage.module.read_text())
    assert read <= {*Params.SECTIONS, *TOP_LEVEL_KEYS}, f"{stage.module.name} reads unknown attributes"
    assert declared_sections(stage) == read, (
        f"dvc.yaml stage {stage.name!r} declares {sorted(declared_sections(stage))}, "
        f"{stage.module.name} reads {sorted(read)}"
    )


@pytest.mark.parametrize("stage", STAGES, ids=STAGE_IDS)
def test_per_task_sections_come_from_configure_files(stage: Stage):
    """Only configure declares a per-task section (whole); a stage reading one reads its
    task's file and declares it, so `dvc repro` never needs a `section.<task>` key."""
    per_task = set(Params.PER_TASK_SECTIONS)
    if stage.name == "configure":
        assert declared_sections(stage) >= per_task
        assert {e for e in stage.declared_params() if e.split(".")[0] in per_task} == per_task, "declared whole"
        return
    assert not declared_sections(stage) & per_task, f"{stage.name} declares a per-task section as params"
    deps = set(stage.entries("deps"))
    source = stage.module.read_text()
    if stage.has_arm:  # an ablation row's stage reads the row's files, not the task's
        for section in arm_settings_loaded(source):
            assert f"data/params/{stage.item_var}/arms/${{item.arm}}/{section}.json" in deps, f"{stage.name}: {section}.json"
        return
    for section in settings_loaded(source):
        assert f"data/params/{stage.item_var}/{section}.json" in deps, f"{stage.name}: {section}.json"
    if stage.over == "ablation.tasks" and arm_settings_loaded(source):  # the table reads every row's
        assert f"data/params/{stage.item_var}/arms" in deps, f"{stage.name}: data/params/{stage.item_var}/arms"


def test_every_section_a_task_can_override_is_resolved_by_configure():
    per_task = {
        name
        for name, info in Params.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, PerTaskSection)
    }
    assert per_task == set(Params.PER_TASK_SECTIONS)


def test_only_stage_modules_load_params():
    """A helper module that loaded params itself would read sections no stage declares."""
    stage_modules = {s.module for s in STAGES}
    for module in (ROOT / "pipeline").rglob("*.py"):
        if module in stage_modules or module.name == "params.py":
            continue
        tree = ast.parse(module.read_text())
        assert not any(_is_loader_call(n) for n in ast.walk(tree)), f"{module} loads params"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("def main(p):\n    data = load_params(p).data\n", {"data"}),
        ("def main(p):\n    params = load_params(p)\n    return params.teacher.for_task('x'), params.tasks\n",
         {"teacher", "tasks"}),
        ("def run(params: Params):\n    return params.student.lr\n", {"student"}),
        ("def main(p):\n    params = load_params(p)\n    return params.task('x')\n", {"datasets"}),
    ],
)
def test_sections_read_finds_accesses(source, expected):
    assert sections_read(source) == expected


@pytest.mark.parametrize(
    "source",
    [
        "def main(p):\n    params = load_params(p)\n    write(params)\n",
        "def main(p):\n    log(load_params(p))\n",
        "def run(params: Params):\n    return helper(params)\n",
    ],
)
def test_sections_read_refuses_a_params_object_used_whole(source):
    with pytest.raises(AssertionError, match="used whole"):
        sections_read(source)


# --------------------------------------------------------------------------- deps, outs, commands


@pytest.mark.parametrize("stage", STAGES, ids=STAGE_IDS)
def test_paths_agree_with_pipeline_paths(stage: Stage):
    code = {d for d in stage.entries("deps") if d.startswith("pipeline")}
    assert f"pipeline/{stage.command}.py" in code, f"{stage.name}: its module is not a dep"
    source = stage.module.read_text()
    for item in stage.items():
        known = all_paths(item)
        declared = [
            Path(stage.render(p, item))
            for field in ("deps", "outs", "metrics", "plots")
            for p in stage.entries(field)
            if p not in code and p != RAW_DATA
        ]
        for path in declared:
            assert path in known, f"{stage.name} {item}: {path} is not a pipeline/paths.py path"
        uses = paths_used(source)
        used = [p for use in uses for p in path_values(use, item)]
        # augment, label and student also run the ablation's rows (`--arm`), whose paths their
        # ablation stages declare. Those stages run the rows' branch only; its undeclared
        # paths are not told apart from the DAG's own branch here, so only what they declare
        # is checked (below), and the DAG's stage leaves the rows' paths to them.
        if stage.has_arm:
            checked = []
        elif stage.over == "ablation.tasks":
            checked = used
        else:
            checked = [p for use in uses if not takes_an_arm(use) for p in path_values(use, item)]
        for path in checked:
            assert _inside(path, paths.SCRATCH) or any(_inside(path, d) for d in declared), (
                f"{stage.module.name} uses {path}, which {stage.name} does not declare"
            )
        for path in declared:
            assert any(_inside(u, path) for u in used), f"{stage.name} declares {path}; its code never uses it"


def imported_modules(module: Path) -> set[Path]:
    """Files of the `pipeline` modules one module imports (anywhere in it, relative or not)."""
    names = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            package = module.relative_to(ROOT).parent.parts
            base = ".".join(
                [*package[: len(package) - node.level + 1], *([node.module] if node.module else [])]
                if node.level else [node.module or ""]
            )
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    files = set()
    for name in names:
        relative = Path(*name.split("."))
        files |= {f for f in (ROOT / f"{relative}.py", ROOT / relative / "__init__.py") if f.is_file()}
    return files


def stage_code(stage: Stage) -> set[Path]:
    """The stage module and every pipeline module it imports, transitively."""
    seen: set[Path] = set()
    todo = [stage.module]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(imported_modules(module))
    return seen


def test_no_stage_module_imports_another():
    """What two stages share lives in a shared module (io, speed, models, ...): a stage that
    imported another would rerun whenever that other stage's code changed, and a reader
    following one stage would land in a second."""
    stage_modules = {s.module for s in STAGES}
    for module in stage_modules:
        others = imported_modules(module) & (stage_modules - {module})
        assert not others, f"{module.name} imports {sorted(m.name for m in others)}"


def test_code_deps_cover_the_code_only_their_stage_runs():
    """Code one stage alone runs is part of it (a change must rerun it); shared modules (io,
    text, params, ...) are not declared, or a typo fix there would rerun every teacher."""
    code = {stage.name: stage_code(stage) for stage in STAGES}
    for stage in STAGES:
        others = set().union(*(modules for name, modules in code.items() if name != stage.name))
        deps = [ROOT / d for d in stage.entries("deps") if d.startswith("pipeline")]
        for module in code[stage.name] - others:
            assert any(_inside(module, d) for d in deps), (
                f"{module.relative_to(ROOT)} runs only in {stage.name}: declare it in the stage's deps"
            )
        for dep in deps:
            assert any(_inside(m, dep) for m in code[stage.name]), f"{stage.name}: {dep} is not its code"


def test_every_data_dep_is_produced_by_a_stage():
    produced = {
        (stage.name, Path(stage.render(p, item)))
        for stage in STAGES
        for item in stage.items()
        for field in ("outs", "metrics", "plots")
        for p in stage.entries(field)
    }
    for stage in STAGES:
        for item in stage.items():
            for dep in stage.entries("deps"):
                if dep == RAW_DATA:
                    continue  # a dataset's raw files: tracked by `dvc add`, no stage makes them
                if dep == str(paths.ENVIRONMENT_LOCK):
                    continue  # the environment lock: git-tracked, made by .ci/update-lock
                if dep.startswith("pipeline"):
                    assert (ROOT / dep).exists(), f"{stage.name}: code dep {dep} does not exist"
                    continue
                path = Path(stage.render(dep, item))
                producers = {name for name, out in produced if _inside(out, path) or _inside(path, out)}
                assert producers - {stage.name}, f"{stage.name}: no stage produces {path}"


MEASURING_STAGES = {"evaluate", "ablation", "report"}  # git-tracked results, rerun on a teammate's machine


@pytest.mark.parametrize("stage", [s for s in STAGES if s.name not in MEASURING_STAGES], ids=lambda s: s.name)
def test_stages_a_teammate_restores_keep_every_output_in_the_dvc_cache(stage: Stage):
    """`dvc push --run-cache` (DVC 3.67) never uploads a `cache: false` output, so a stage
    with one could not be restored from the run-cache on another machine: it would rerun."""
    for field in ("outs", "metrics", "plots"):
        for entry in stage.body.get(field, []):
            options = next(iter(entry.values())) if isinstance(entry, dict) else {}
            assert options.get("cache", True), f"{stage.name}: {entry} is not DVC-cached"


@pytest.mark.parametrize("stage", STAGES, ids=STAGE_IDS)
def test_command_runs_the_stage_for_its_own_item(stage: Stage):
    args = shlex.split(stage.body["cmd"])
    assert args[:3] == ["python", "-m", "pipeline"]
    assert stage.command == COMMAND_OF.get(stage.name, stage.name)
    assert stage.command in {c.name or c.callback.__name__ for c in app.registered_commands}
    options = dict(zip(args[4::2], args[5::2]))
    assert len(args[4:]) == 2 * len(options), f"{stage.name}: expected --option value pairs"
    if stage.matrix is not None:
        assert options == {f"--{key}": f"${{item.{key}}}" for key in stage.matrix}
    elif stage.item_var is not None:
        assert options == {"--task": stage.item_var}
    else:
        assert options == {}, "the default --params params.yaml is the file DVC tracks"


# --------------------------------------------------------------------------- smoke profile


def test_smoke_profile_is_valid_and_wins_for_every_task():
    """Every override validates and is what each task resolves to (no per-task value beats it)."""
    changes = overrides(smoke_args())
    params = parse_params(with_overrides(PARAMS_YAML, changes), source=str(SMOKE_ARGS))
    for key, value in changes.items():
        section, *rest = key.split(".")
        values = getattr(params, section)
        if not rest:  # a top-level key such as `tasks`
            assert values == value, key
            continue
        if isinstance(values, PerTaskSection):
            tasks = [rest.pop(0)] if rest[0] in TASKS else params.tasks
            resolved = [values.for_task(t) for t in tasks]
        else:
            resolved = [values]
        (field,) = rest
        assert all(getattr(r, field) == value for r in resolved), f"{key}: a per-task value beats it"
