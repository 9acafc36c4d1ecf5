"""The build house: what runs on a workstation. Inspect (model, compat), optimize, calibration feeds,
quantize, parity, the package pipeline, target profiles and the report. May import onnx, onnxslim,
pnnx, nncf and the device house (parity runs the device's sessions); the device never imports it."""
