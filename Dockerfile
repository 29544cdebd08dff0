# syntax=docker/dockerfile:1
# The modelfleet server image (docs/deploy.md): Kubernetes (V2 on 8000, gRPC on 8001), KServe, and
# SageMaker (`docker run IMAGE serve`: port 8080 or SAGEMAKER_BIND_TO_PORT).
#
#   docker build -t modelfleet:0.1.0 .                                   # ONNX models (onnxruntime)
#   docker build --build-arg WITH_TORCH=1 -t modelfleet:0.1.0-torch .    # + TorchScript (torch CPU build)
#   podman build --format docker -t modelfleet:0.1.0 .                   # podman/buildah: OCI format drops HEALTHCHECK
#
# Runs as uid 10001 with a read-only root filesystem: only /tmp and /var/cache/modelfleet (the
# object-store cache) are written; mount volumes there.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# extras: grpc (the gRPC front), s3 (repositories in object storage)
ARG EXTRAS=grpc,s3
ARG WITH_TORCH=0
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/modelfleet
WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
# torch first, from the CPU wheel index, so that no CUDA build is pulled in as a dependency
RUN if [ "$WITH_TORCH" = "1" ]; then \
        /opt/modelfleet/bin/pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"; \
    fi \
 && /opt/modelfleet/bin/pip install ".[${EXTRAS}]" \
 && /opt/modelfleet/bin/python -m compileall -q /opt/modelfleet/lib

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="modelfleet" \
      org.opencontainers.image.description="Serve hundreds to thousands of ML models from a few machines" \
      org.opencontainers.image.licenses="Apache-2.0" \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true \
      com.amazonaws.sagemaker.capabilities.multi-models=true
RUN groupadd --system --gid 10001 modelfleet \
 && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin modelfleet \
 && mkdir -p /models /var/cache/modelfleet \
 && chown 10001:10001 /var/cache/modelfleet
COPY --from=build /opt/modelfleet /opt/modelfleet
COPY --chmod=0755 docker/entrypoint.sh /usr/local/bin/modelfleet-entrypoint
ENV PATH=/opt/modelfleet/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MODELFLEET_HOST=0.0.0.0 \
    MODELFLEET_S3__CACHE_DIR=/var/cache/modelfleet/s3
VOLUME ["/tmp", "/var/cache/modelfleet"]
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8001 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["modelfleet-entrypoint", "healthcheck"]
ENTRYPOINT ["modelfleet-entrypoint"]
