"""Tooling that ships with pyconc but is not its API: the command line (`python -m pyconc`), the benchmarks
(`bench`, `bench_sync`, `bench_dict`) and the stress tests (`stress`, `stress_dict`). Nothing here is imported by
`import pyconc`."""
