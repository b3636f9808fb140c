"""Export layer: checkpoints to ONNX (fp32 / fp16 / INT8) and TensorRT engines.

graphs (deployable modules and I/O), model_card (self-description stored in every export),
onnx_export (export, simplification, parity), quantize (INT8), scenes (synthetic inputs for
parity and calibration), tensorrt_build and engine_cache (engine build and invalidation),
cli (`emotion-perception export`). See docs/DEPLOYMENT.md.
"""
