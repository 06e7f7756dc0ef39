"""The models layer's error, beneath the registry and the assembled packages so that neither imports
the other to raise it."""

from __future__ import annotations


class RegistryError(Exception):
    """The registry file or a model source is unusable; one line for the user."""
