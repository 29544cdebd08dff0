"""The V2 gRPC wire format: generated protobuf messages, the service's method table, the codec.

Needs the `grpc` extra (grpcio, protobuf). The messages live in protobuf package `modelfleet.v2`
(see grpc_service.proto for why); the service is served as `inference.GRPCInferenceService`, the
name tritonclient calls, with the request / response types of each method listed once here.
"""

from __future__ import annotations

from google.protobuf.message import Message

from modelfleet.protocol.grpc import grpc_service_pb2 as pb

SERVICE = "inference.GRPCInferenceService"

# method -> (request type, response type); the server registers these and test / bench clients
# build their stubs from them, so the two cannot drift apart.
METHODS: dict[str, tuple[type[Message], type[Message]]] = {
    "ServerLive": (pb.ServerLiveRequest, pb.ServerLiveResponse),
    "ServerReady": (pb.ServerReadyRequest, pb.ServerReadyResponse),
    "ModelReady": (pb.ModelReadyRequest, pb.ModelReadyResponse),
    "ServerMetadata": (pb.ServerMetadataRequest, pb.ServerMetadataResponse),
    "ModelMetadata": (pb.ModelMetadataRequest, pb.ModelMetadataResponse),
    "ModelConfig": (pb.ModelConfigRequest, pb.ModelConfigResponse),
    "ModelInfer": (pb.ModelInferRequest, pb.ModelInferResponse),
    "ModelStatistics": (pb.ModelStatisticsRequest, pb.ModelStatisticsResponse),
    "RepositoryIndex": (pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
    "RepositoryModelLoad": (pb.RepositoryModelLoadRequest, pb.RepositoryModelLoadResponse),
    "RepositoryModelUnload": (pb.RepositoryModelUnloadRequest, pb.RepositoryModelUnloadResponse),
}


def method_path(method: str) -> str:
    """The HTTP/2 path a method is called on: `/inference.GRPCInferenceService/ModelInfer`."""
    return f"/{SERVICE}/{method}"
