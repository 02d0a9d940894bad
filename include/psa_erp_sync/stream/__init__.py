"""Event-driven (webhook-announced) processing: the stream half of batch-plus-stream."""
