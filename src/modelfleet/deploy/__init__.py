"""Deploying a plan beyond one machine: Kubernetes manifests, the nginx router, a KServe runtime
(`modelfleet deploy`); the container image itself is the repository's Dockerfile."""
