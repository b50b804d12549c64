"""Encoders: one interface (encode texts -> L2-normalized embeddings) over the runtimes that several targets share."""
