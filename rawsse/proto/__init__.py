"""Sans-I/O protocol code: bytes and values in, bytes and values out.

Nothing in this package imports asyncio or socket (a test checks it), so every rule here
is tested without a network.
"""
