"""Running servers as processes: one process, or a supervisor and its workers."""
