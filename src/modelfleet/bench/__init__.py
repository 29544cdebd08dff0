"""`modelfleet bench`: a closed-loop load generator for any KServe V2 / Open Inference Protocol server.

spec        BenchSpec: the options, parsed once at the CLI edge
workload    before the clock: metadata, input signatures, pre-encoded bodies
synth       random valid inputs from metadata      encode     V2 JSON / binary bodies
popularity  uniform / Zipf model choice             httpwire   request bytes, response framing
client      the closed loop (asyncio Protocol)      worker     client processes (--processes)
messages    typed msgpack messages between them     stats      percentiles, per-model figures
run         one run end to end                      report     rich tables, JSON report
"""
