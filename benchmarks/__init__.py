"""Speed and memory benchmarks of uowstress; run them all with `python benchmarks/run.py`."""
