"""What the test files share: helpers, sample inputs, tolerances, case tables and oracles (see tests/README.md).

Test files import it as `support.<module>`: tests/ is on sys.path because pytest's default "prepend" import mode puts
the folder of tests/conftest.py there (tests/ has no __init__.py). No test file imports another test file; whatever
two of them need lives here.

With tests/ on sys.path, each part folder (ops/, nn/, ...) is also importable as a namespace package of its name. That
is harmless as long as no folder is named like a package that may be missing from an environment (a real package
always wins over a folder without __init__.py): hence tests/triton_ops/ and tests/cuda_kernels/, not triton/ and
cuda/, which would make `import triton` succeed on a machine without triton.
"""
