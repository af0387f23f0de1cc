"""Benchmarks: `python -m bench [name ...]` (or `make bench BENCH=name`).

Each module `bench/bench_<name>.py` exposes `async def run() -> list[Figure]`; every figure is
printed as one JSON line on stdout, with a baseline measured in the same run on the same machine.
Logs go to stderr. Benchmarks run against a throwaway database and RabbitMQ vhost
(`bench.infra`) and never as part of the test suite.
"""
