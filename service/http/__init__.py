"""The HTTP/JSON face of the service (off by default; ``--http-port``): the publisher's hosted API
paths as its official SDK sends them, and the OpenAI embeddings shape, on the same engine, batcher,
store, auth, limits and metrics as the gRPC server, in the same process and event loop."""
