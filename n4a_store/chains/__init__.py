"""Chains: the execution trace of a training run, its storage form, and replay."""
