"""Helpers for the Triton test modules (tests/test_triton_*.py); see common.py."""
