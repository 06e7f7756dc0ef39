"""What the items measure beside accuracy: the machine's fingerprint and timings, a busy machine,
energy, cold loads, and next-token divergence from a kept reference."""
