"""The Python peers the suite compares rawsse with, written the way their docs suggest:
one asyncio.Queue per subscriber and an in-memory broadcast to every queue of a topic."""
