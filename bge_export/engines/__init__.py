"""ONNX -> engine builders for one GPU. `tensorrt_options` is pure Python (never imports tensorrt);
`tensorrt_build` imports tensorrt only when a build runs, on a host that has it."""
