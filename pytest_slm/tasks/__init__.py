"""Accuracy tasks: finding and fingerprinting lm-eval tasks, and the LM adapter lm-eval drives."""
