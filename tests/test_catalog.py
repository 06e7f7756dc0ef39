"""What pytest-slm changes of lm-eval while an item evaluates, and that it puts it back."""

from __future__ import annotations

from pytest_slm.tasks import catalog


def test_an_item_leaves_out_lm_evals_run_description_and_puts_it_back():
    """simple_evaluate's `git describe` and transformers import cost a second a process; lm-eval's
    own use in the same process keeps them."""
    from lm_eval import evaluator

    original = (evaluator.add_env_info, evaluator.get_git_commit_hash)
    storage: dict[str, str] = {}
    with catalog._no_run_description():
        evaluator.add_env_info(storage)
        assert storage == {} and evaluator.get_git_commit_hash() is None
    assert (evaluator.add_env_info, evaluator.get_git_commit_hash) == original
