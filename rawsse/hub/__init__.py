"""The hub: event ids, encoding, history and who is subscribed to what. No I/O."""
