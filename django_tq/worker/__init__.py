"""The worker: a supervising parent and consumers that claim, execute, record and ack."""
