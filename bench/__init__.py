"""Benchmarks: the protocol benchmark (`python -m bench.run`) and the directory sync benchmark."""
