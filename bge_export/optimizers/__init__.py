"""Optimizers: graph fusion, FP16 and INT8 (dynamic, static QDQ, accuracy-aware) on exported ONNX graphs."""
