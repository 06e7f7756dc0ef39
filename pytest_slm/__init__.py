"""pytest-slm: the plugin registers itself (entry point `slm`); what a test file imports is here."""

from .tasks.prompt_set import prompt_set

__all__ = ["prompt_set"]
