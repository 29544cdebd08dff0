"""What `make serve` prints before serving: example calls against the demo repository.

`python -m modelfleet.demo.banner --text "..."` prints only a minilm-sentiment request body.
"""

from __future__ import annotations

import argparse
import json

from modelfleet.demo.request import example_request

IDENTITY_BODY = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": list(range(16))}]}


def banner(url: str, repo: str) -> str:
    host = url.removeprefix("http://").removeprefix("https://")
    body = json.dumps(example_request("I love how fast this is!"), separators=(",", ":"))
    identity = json.dumps(IDENTITY_BODY, separators=(",", ":"))
    text = json.dumps(
        {
            "inputs": [
                {"name": "text", "shape": [1, 1], "datatype": "BYTES", "data": ["I love how fast this is!"]}
            ]
        },
        separators=(",", ":"),
    )
    return f"""
modelfleet is starting on {url} with the models in {repo}/ (Ctrl-C stops it).

  curl -s {url}/v2/health/ready
  curl -s {url}/v2/models/minilm-sentiment
  curl -s {url}/v2/models/identity/infer -d '{identity}'
  curl -s {url}/v2/models/minilm-sentiment/infer -d '{body}'
  curl -s {url}/v2/models/minilm-sentiment-text/infer -d '{text}'
  curl -s -X POST {url}/v2/repository/index
  curl -s {url}/v2/models/stats
  curl -s {url}/metrics
  .venv/bin/modelfleet top {url}

  .venv/bin/python -m modelfleet.demo.banner --text "your sentence" | \\
      curl -s {url}/v2/models/tenant-00001/infer -d @-

  .venv/bin/python - <<'PY'
import numpy as np, tritonclient.http as httpclient
client = httpclient.InferenceServerClient("{host}")
x = httpclient.InferInput("input", [1, 16], "FP32")
x.set_data_from_numpy(np.arange(16, dtype=np.float32).reshape(1, 16))
print(client.infer("identity", [x]).as_numpy("output"))
PY
  (the same with tritonclient.grpc on the gRPC port, 127.0.0.1:8001 by default)

  .venv/bin/modelfleet bench --url {url} --model identity -c 8 -d 10 --encoding binary
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--repo", default="demo-repo")
    parser.add_argument("--text", help="print only a minilm-sentiment request body for this text")
    args = parser.parse_args()
    if args.text is not None:
        print(json.dumps(example_request(args.text), separators=(",", ":")))
    else:
        print(banner(args.url, args.repo))


if __name__ == "__main__":
    main()
