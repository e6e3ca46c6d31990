"""The I/O layer: an asyncio Protocol for HTTP and the stream reactors. It moves bytes;
what the bytes say is decided in rawsse.core."""
