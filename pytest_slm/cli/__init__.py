"""`python -m pytest_slm COMMAND`: the commands beside the plugin that are not a test run."""
