"""Brokers: where published events get their place in the one event order, and how they
reach every process's hub (one process, worker processes on one machine, or a cluster)."""
