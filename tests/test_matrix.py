import pytest

from pytest_slm.matrix import Case, TaskSpec, build_cases, build_parity_cases, fidelity_reference
from pytest_slm.models.registry import ModelEntry


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("slm_arith", TaskSpec("slm_arith", 0)),
        ("slm_arith:5", TaskSpec("slm_arith", 5)),
        (" arc_easy:0 ", TaskSpec("arc_easy", 0)),
    ],
)
def test_task_spec_parse(text, expected):
    assert TaskSpec.parse(text) == expected


@pytest.mark.parametrize("text", [":5", "slm_arith:five", "slm_arith:-1", "slm_arith:1000"])
def test_task_spec_rejects_bad_shots(text):
    with pytest.raises(ValueError):
        TaskSpec.parse(text)


def test_ids_are_readable_and_stable():
    case = Case("smollm2-135m", "llamacpp-cpu", "native", TaskSpec("slm_arith", 5))
    assert case.id == "smollm2-135m-llamacpp-cpu-native-slm_arith:5"
    assert case.model_id == "smollm2-135m-llamacpp-cpu-native"
    assert case.backend == "llamacpp"
    assert Case("m", "mlx-gpu", "f16").id == "m-mlx-gpu-f16"


def test_cases_keep_one_load_together():
    cases = build_cases(["a", "b"], ["llamacpp-cpu"], ["native"], [TaskSpec("t1"), TaskSpec("t2", 5)])
    assert [c.id for c in cases] == [
        "a-llamacpp-cpu-native-t1:0",
        "a-llamacpp-cpu-native-t2:5",
        "b-llamacpp-cpu-native-t1:0",
        "b-llamacpp-cpu-native-t2:5",
    ]
    assert [c.id for c in build_cases(["a"], ["mlx-cpu"], ["native"], None)] == ["a-mlx-cpu-native"]


def test_parity_pairs_llama_cpp_and_mlx_on_the_same_hardware_only():
    cases = build_parity_cases(
        {"m": ModelEntry("m", gguf="m.gguf")}, ["llamacpp-cpu", "llamacpp-cuda", "mlx-cpu", "mlx-gpu"]
    )
    assert [c.id for c in cases] == ["m-mlx-cpu-native-vs-llamacpp-cpu-f32", "m-mlx-gpu-native-vs-llamacpp-cuda-f32"]
    assert cases[0].sides == (Case("m", "llamacpp-cpu", "f32"), Case("m", "mlx-cpu", "native"))
    assert build_parity_cases({"m": ModelEntry("m", gguf="m.gguf")}, ["llamacpp-cpu", "mlx-gpu"]) == []


def test_a_model_with_both_formats_gets_same_weights_and_formats_parity():
    models = {"both": ModelEntry("both", gguf="b.gguf", mlx="b-mlx"), "mlx-only": ModelEntry("mlx-only", mlx="m-mlx")}
    cases = build_parity_cases(models, ["llamacpp-cpu", "mlx-cpu"])
    assert [c.id for c in cases] == [
        "both-mlx-cpu-native-vs-llamacpp-cpu-f32",
        "both-mlx-cpu-native-vs-llamacpp-cpu-native",
    ]
    same, formats = cases
    assert same.sides == (Case("both", "llamacpp-cpu", "f32"), Case("both", "mlx-cpu", "native", source="gguf"))
    assert same.sides[1].model_id == "both-mlx-cpu-native-from-gguf"  # not the checkpoint's load
    assert formats.sides == (Case("both", "llamacpp-cpu", "native"), Case("both", "mlx-cpu", "native"))


def test_mlx_quants_of_a_checkpoint_are_measured_against_the_checkpoint():
    assert fidelity_reference(Case("m", "mlx-gpu", "mlx-q4"), has_checkpoint=True) == Case("m", "mlx-cpu", "native")
    assert fidelity_reference(Case("m", "mlx-cpu", "mlx-q4"), has_checkpoint=False) == Case("m", "llamacpp-cpu", "f32")
    assert fidelity_reference(Case("m", "llamacpp-cpu", "q8_0"), has_checkpoint=True) == Case(
        "m", "llamacpp-cpu", "f32"
    )


def test_a_kv_cache_type_shows_in_ids_and_baseline_paths_only_when_quantized():
    cases = build_cases(["m"], ["llamacpp-cpu"], ["native"], [TaskSpec("t")], ["f16", "q8_0"])
    assert [c.id for c in cases] == ["m-llamacpp-cpu-native-t:0", "m-llamacpp-cpu-native-kv-q8_0-t:0"]
    assert [c.model_id for c in cases] == ["m-llamacpp-cpu-native", "m-llamacpp-cpu-native-kv-q8_0"]  # one load each
    assert [c.variant for c in cases] == ["native", "native-kv-q8_0"]  # the baselines' quant directory
    assert build_cases(["m"], ["llamacpp-cpu"], ["native"], None) == [Case("m", "llamacpp-cpu", "native", kv="f16")]


def test_a_quantized_kv_cache_is_measured_against_the_same_quant_with_the_f16_cache():
    for quant in ("native", "f32"):
        case = Case("m", "llamacpp-cpu", quant, TaskSpec("t"), kv="q4_0")
        assert fidelity_reference(case, has_checkpoint=True) == Case("m", "llamacpp-cpu", quant)
