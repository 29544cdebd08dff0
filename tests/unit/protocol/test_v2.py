import pytest

from modelfleet.errors import BadRequest
from modelfleet.protocol.v2 import InferRequest, check_parameters


def test_unknown_parameters_are_ignored_and_reserved_ones_checked() -> None:
    check_parameters(
        {"my_custom": object(), "timeout": 10, "priority": 2, "binary_data_output": True}, "request"
    )
    with pytest.raises(
        BadRequest, match="request: parameter 'timeout' must be a non-negative 64-bit integer"
    ):
        check_parameters({"timeout": -1}, "request")
    with pytest.raises(BadRequest, match="'binary_data_output' must be a boolean"):
        check_parameters({"binary_data_output": "yes"}, "request")
    with pytest.raises(BadRequest, match="'priority' must be a non-negative 64-bit integer"):
        check_parameters({"priority": True}, "request")


def test_tensor_parameters_have_their_own_reserved_set() -> None:
    check_parameters({"binary_data": False, "binary_data_size": 0}, "input 'a'", tensor=True)
    with pytest.raises(BadRequest, match="input 'a': parameter 'binary_data_size'"):
        check_parameters({"binary_data_size": 1.5}, "input 'a'", tensor=True)
    check_parameters({"binary_data_size": "ignored at request level"}, "request")


def test_request_exposes_timeout_and_priority() -> None:
    request = InferRequest([], parameters={"timeout": 500, "priority": 3})
    assert request.timeout_us == 500
    assert request.priority == 3
    assert InferRequest([]).timeout_us is None
