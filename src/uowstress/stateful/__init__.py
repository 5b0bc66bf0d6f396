"""Hypothesis state machines that drive a Target and check what it commits."""
