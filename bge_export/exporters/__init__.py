"""Exporters: convert the EmbeddingModule into one deployable graph per format."""
