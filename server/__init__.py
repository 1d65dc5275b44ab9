"""The receiver service: FastAPI app, sessions with replay clocks, batched decoding, REST stats."""
