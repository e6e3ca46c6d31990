"""The sans-I/O core: HTTP requests and the connection's state machine, SSE encoding,
ids, topics, publish bodies, the hub (history, subscriptions, fan-out batches), the slot
table, and the API that turns requests into effects.

Bytes, requests and events in; bytes, effects and deadlines out. Nothing here imports a
socket, an event loop, a poller or a file (tests/test_layers.py checks the import graph),
so every rule is tested with byte literals and a fake clock.
"""
