"""Helpers for the Triton test modules (tests/triton_ops/test_triton_*.py); see common.py."""
