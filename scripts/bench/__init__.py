"""What the bench scripts share: `harness` (real `earshot` child processes, also used by
tests/integration) and `measure` (one measurement of scripts/bench.py, run as a file).

A package, so ``scripts.bench.harness`` resolves here rather than to the script
scripts/bench.py beside this folder; that script is run as a file and loaded by path.
"""
