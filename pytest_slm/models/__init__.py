"""The models a run tests: the registry of names and sources, GGUFs assembled from chunk packages,
the handle a test drives, and chat templates."""
