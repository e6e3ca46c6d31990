"""The WebSocket transport's sans-I/O parts (RFC 6455): the opening handshake, frames in
and out, the JSON events and the client's command protocol."""
