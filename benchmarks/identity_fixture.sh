# Sourced by overhead.sh and overhead_ab.sh. identity_fixture DIR PY: writes DIR/repo/identity/1/model.onnx
# (the `identity` model, made with PY's modelfleet) and DIR/bin.lua: wrk's request, one [1,16] FP32 input
# in the binary extension, the output asked for in binary too.
identity_fixture() {
  mkdir -p "$1/repo/identity/1"
  "$2" - "$1/repo/identity/1/model.onnx" <<'PY'
import sys, onnx
from modelfleet.demo.onnx_files import identity_model
onnx.save(identity_model(), sys.argv[1])
PY
  cat >"$1/bin.lua" <<'LUA'
wrk.method = "POST"
local header = '{"inputs":[{"name":"input","shape":[1,16],"datatype":"FP32","parameters":{"binary_data_size":64}}],"parameters":{"binary_data_output":true}}'
wrk.body = header .. string.rep("\0\0\128\63", 16)
wrk.headers["Inference-Header-Content-Length"] = tostring(#header)
wrk.headers["Content-Type"] = "application/octet-stream"
LUA
}
