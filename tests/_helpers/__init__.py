"""Helpers shared by several test files (importable because pyproject's pytest configuration
puts tests/ on the path). Test modules never import each other: what two of them share lives
here, and the numeric tolerances live in tests/tolerances.py."""
