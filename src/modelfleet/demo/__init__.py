"""The demo model repository: identity, a MiniLM sentiment classifier, the MiniLM encoder as a shared
base, and tenants: adapters over that base or fine-tuned copies of the classifier.

`modelfleet demo-repo` builds it; building the MiniLM models needs the `demo` extra (torch).
"""

from modelfleet.demo.builder import build_demo_repo
from modelfleet.demo.request import example_request

__all__ = ["build_demo_repo", "example_request"]
