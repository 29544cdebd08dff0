"""The demo model repository: identity, a MiniLM sentiment classifier and tenant copies of it.

`modelfleet demo-repo` builds it; building minilm-sentiment needs the `demo` extra (torch).
"""

from modelfleet.demo.builder import build_demo_repo
from modelfleet.demo.request import example_request

__all__ = ["build_demo_repo", "example_request"]
