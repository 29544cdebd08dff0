"""`modelfleet compile` and `modelfleet import`: bring a model into the repository, checked.

compile: a Hugging Face folder, an ONNX / TorchScript / torch.export file or a scikit-learn / XGBoost /
LightGBM model -> an optimised ONNX or TorchScript model folder for one target and precision, its
numerics gated against the source and its speed profiled (compile.json). Guide: docs/compile.md.
import: many fine-tuned checkpoints of one architecture -> shared weight blobs, head-only fine-tunes
as adapters over one base. Heavy imports (torch, transformers, onnxruntime) stay inside the modules
that need them; `pipeline.compile_model` and `importer.import_checkpoints` are the entry points.
"""
