"""Shared pytest configuration: tests run on the CPU with tiny models and small simulated granules."""
