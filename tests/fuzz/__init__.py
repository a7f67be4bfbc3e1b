"""A fuzzing harness for the decoders (issue #13): mutated FFmpeg-made media in worker processes.

seeds.py      tiny seed files, two or more per accepted format, from recorded FFmpeg commands
structure.py  where the chunks, boxes, segments and header fields of a file are
mutate.py     deterministic mutations: ``mutate(seed, mutation_seed)``
target.py     what a worker runs per input: the public decoders, and their output contract
protocol.py   the length-prefixed frames between the harness and its workers
worker.py     the worker process: runs inputs one after another, peak RSS per input
harness.py    the parent's side: time and memory caps, restarts, outcomes, campaigns
__main__.py   ``python -m tests.fuzz --count N --seed S --workers W --out DIR``
"""
