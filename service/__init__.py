"""Floor 2: the online path — engine, batching, the Serve app and the HTTP API."""
