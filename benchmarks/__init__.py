"""Benchmarks: `./dev bench` runs them on the embedded services and writes benchmarks/report.md."""
