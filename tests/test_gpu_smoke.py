"""The GPU smoke driver (benchmarks/gpu_smoke.py) must stop stages at their budget and report each one."""
import subprocess
import sys
from pathlib import Path

from benchmarks.gpu_smoke import Stage, run_stage

ROOT = Path(__file__).resolve().parent.parent


def test_a_stage_that_hangs_is_cut_at_its_budget_and_keeps_its_output(tmp_path):
    stage = Stage("hang", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"], 60)
    run_stage(stage, 1.5, tmp_path / "log")
    assert stage.status == "cut at 2 s"
    assert "started" in stage.log
    assert "stage hang: cut at 2 s" in (tmp_path / "log").read_text()
    assert stage.seconds < 60


def test_a_failing_stage_reports_its_exit_status_and_last_line(tmp_path):
    stage = Stage("fail", [sys.executable, "-c", "print('partial line', end=''); raise SystemExit(3)"], 60)
    run_stage(stage, 30, tmp_path / "log")
    assert stage.status == "failed (exit 3)"
    assert stage.summary == "partial line"


def test_unknown_stage_names_are_refused_in_one_line(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_smoke.py"), "--only", "tests,nonsense",
                           "--out", str(tmp_path), "--no-write"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "unknown stage(s) nonsense" in proc.stderr


def test_the_projection_speed_at_1024_on_cuda_is_a_stage_whose_flags_the_benchmark_accepts(tmp_path):
    """Issue 10 asks for steps/s at 1024 on a GPU: the `project` stage must call project_speed.py so that it parses."""
    from benchmarks import project_speed
    from benchmarks.gpu_smoke import stages
    stage = {s.name: s for s in stages(sys.executable, tmp_path)}["project"]
    assert stage.argv[1].endswith("project_speed.py")
    ctx = project_speed.main.make_context("project_speed.py", list(stage.argv[2:]))
    assert ctx.params["resolutions"] == (1024,) and ctx.params["device"] == "cuda" and ctx.params["steps"] >= 10
