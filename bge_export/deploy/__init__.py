"""Deployment writers: an export folder turned into what a serving system loads.

* `triton`: a Triton Inference Server model repository (tokenizer in the Python backend, the ONNX graph on the
  onnxruntime backend, built TensorRT plans, and ensembles that take strings and return embeddings).
* `tei`: what Text Embeddings Inference's ONNX backend reads from a folder, checked against an export.

Nothing heavy is imported here; each module imports its own dependencies when called.
"""
