"""The texts the measurements read: the evaluation text (parity and fidelity compare it, latency
prompts are cut from it) and the depth text fidelity reads at a nonzero --slm-depths."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest

from ..models.registry import shown

EVAL_TEXT = ("evaluation text", "--slm-eval-text")
DEPTH_TEXT = ("depth text", "--slm-depth-text")


def eval_text_problem(path: Path, named: tuple[str, str] = EVAL_TEXT) -> str | None:
    """Why the evaluation (or depth) text cannot serve (checked at start-up when it exists, else by
    the items that need it)."""
    what, option = named
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot read the {what} {shown(path)} ({option}): {exc}"
    if not text.strip():
        return f"the {what} {shown(path)} ({option}) is empty"
    return None


def start_up_problem(eval_text: Path, depth_text: Path, depths: tuple[int, ...]) -> str | None:
    """The texts checked before any item runs, where they exist (a missing one fails the items that read it)."""
    if eval_text.exists() and (problem := eval_text_problem(eval_text)):
        return problem
    if any(depths) and depth_text.exists() and (problem := eval_text_problem(depth_text, DEPTH_TEXT)):
        return problem
    return None


@dataclass
class Texts:
    """Each text read once a run; an unusable one fails the item that asks for it."""

    eval_path: Path
    depth_path: Path

    @cached_property
    def eval_text(self) -> str:
        if problem := eval_text_problem(self.eval_path):
            pytest.fail(problem, pytrace=False)
        return self.eval_path.read_text(encoding="utf-8")

    @cached_property
    def depth_text(self) -> str:
        if problem := eval_text_problem(self.depth_path, DEPTH_TEXT):
            pytest.fail(problem, pytrace=False)
        return self.depth_path.read_text(encoding="utf-8")
