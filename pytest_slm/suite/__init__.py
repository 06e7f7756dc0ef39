"""The built-in suite, for any project: `pytest --pyargs pytest_slm.suite` runs its accuracy items
on the built-in tasks (or --slm-tasks), for the registry's models (or --slm-models), against the
baselines under the project's rootdir. This repository's own suites/ holds the same test and more."""
