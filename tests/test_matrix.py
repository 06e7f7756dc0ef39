import pytest

from pytest_slm.matrix import Case, TaskSpec, build_cases, build_parity_cases


@pytest.mark.parametrize(
    ("text", "expected"),
    [("slm_arith", TaskSpec("slm_arith", 0)), ("slm_arith:5", TaskSpec("slm_arith", 5)), (" arc_easy:0 ", TaskSpec("arc_easy", 0))],
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
    cases = build_parity_cases(["m"], ["llamacpp-cpu", "llamacpp-cuda", "mlx-cpu", "mlx-gpu"])
    assert [c.id for c in cases] == ["m-mlx-cpu-native-vs-llamacpp-cpu-f32", "m-mlx-gpu-native-vs-llamacpp-cuda-f32"]
    assert cases[0].sides == (Case("m", "llamacpp-cpu", "f32"), Case("m", "mlx-cpu", "native"))
    assert build_parity_cases(["m"], ["llamacpp-cpu", "mlx-gpu"]) == []
