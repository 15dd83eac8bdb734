"""Benchmarks: `make bench` seeds, serves and loads certgraph and the floor (bench/README.md)."""
