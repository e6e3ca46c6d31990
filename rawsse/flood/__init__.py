"""`rawsse flood`: a load client for any SSE server. The tallying (payloads, loss and
duplicate detection, latency histograms, merging results) is plain code in tally.py; the
worker processes and the publisher move bytes."""
