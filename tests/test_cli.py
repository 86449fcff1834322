"""The command line's contract for a stopped stage: one line on stderr, its exit code, and the
previous outputs kept (or, where `dvc repro` removed them, how to check them out again)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from pipeline import paths
from pipeline.augment import main as augment_main
from pipeline.prepare import main as prepare_main
from project import configured

ROOT = Path(__file__).resolve().parents[1]

# Augment with a tokenizer slowed down in its worker processes (forked after the patch), each
# of which leaves a marker file once it is at work, so Ctrl-C surely lands while the pool works.
SLOW_AUGMENT = """
import os, sys, time
from pathlib import Path
import pipeline.augment as augment
tokenize = augment.word_tokenize
def slow(text):
    Path(f"busy-worker-{os.getpid()}").touch()
    time.sleep(0.05)
    return tokenize(text)
augment.word_tokenize = slow
sys.argv = ["pipeline", "augment", "--task", "sst2", "--workers", "2"]
from pipeline.cli import main
main()
"""


def test_ctrl_c_is_one_line_exit_130_no_worker_traces_and_keeps_the_previous_output(
    tmp_path, monkeypatch, sample_glue_dir
):
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({
        "tasks": ["sst2"], "data": {"glue_dir": str(sample_glue_dir), "max_train_rows": 200, "max_eval_rows": 10},
    }))
    configured(params)
    prepare_main("sst2", params)
    augment_main("sst2", params, 1)
    previous = paths.augmented("sst2").read_bytes()

    # A new session: Ctrl-C in a terminal signals the whole process group, workers included.
    stage = subprocess.Popen([sys.executable, "-c", SLOW_AUGMENT], cwd=tmp_path, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("busy-worker-*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        busy = {int(p.name.rsplit("-", 1)[1]) for p in tmp_path.glob("busy-worker-*")}
        assert busy and stage.pid not in busy, "augment's workers never started tagging"
        os.killpg(stage.pid, signal.SIGINT)
        _, stderr = stage.communicate(timeout=120)
    finally:
        stage.kill()
    assert stage.returncode == 130, stderr
    lines = stderr.strip().splitlines()
    assert lines[-1] == "interrupted: python -m pipeline augment --task sst2 --workers 2; previous outputs kept"
    assert not any(word in stderr for word in ("Traceback", "KeyboardInterrupt", "ForkPoolWorker")), stderr
    assert paths.augmented("sst2").read_bytes() == previous
    assert [p.name for p in paths.augmented("sst2").parent.iterdir()] == ["sst2.parquet"]


def test_a_stage_failing_after_dvc_removed_its_outputs_says_how_to_check_them_out(tmp_path):
    """Under `dvc repro` (DVC_STAGE set) a stage whose recorded outputs are gone, and in DVC's
    cache, says so after its error: `dvc checkout <stage>` restores them."""
    md5 = "d41d8cd98f00b204e9800998ecf8427e"
    (tmp_path / ".dvc" / "cache" / "files" / "md5" / md5[:2]).mkdir(parents=True)
    (tmp_path / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).write_bytes(b"")
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {"configure@sst2": {
        "outs": [{"path": "data/params/sst2", "md5": md5}]}}}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"tasks": ["sst2"], "teacher": {"model": "./no/such/dir"}}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_STAGE": "configure@sst2", "DVC_ROOT": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "pipeline", "configure", "--task", "sst2"], cwd=tmp_path,
                            capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "error: teacher.model=./no/such/dir: no such directory (give a local path or a hub id); DVC removed the "
        "outputs dvc.lock records for configure@sst2 before running it: dvc checkout --force configure@sst2 "
        "restores those in its cache"
    )
    env.pop("DVC_STAGE")  # run by hand: nothing was removed, nothing to add
    result = subprocess.run([sys.executable, "-m", "pipeline", "configure", "--task", "sst2"], cwd=tmp_path,
                            capture_output=True, text=True, env=env)
    assert result.stderr.strip().splitlines()[-1] == (
        "error: teacher.model=./no/such/dir: no such directory (give a local path or a hub id)"
    )
