# depthscope: the web service in a container, CPU-only torch 2.13.0, running as a non-root user.
#   docker build -t depthscope .
#   docker run -p 8000:8000 -v depthscope-data:/data depthscope
# Any Debian-like image with python3.11 (+ venv, pip) can be the base:
#   docker build --build-arg BASE_IMAGE=my-python:3.11 -t depthscope .
ARG BASE_IMAGE=python:3.11-slim

# ---- deps stage: a virtual environment with torch and the dependencies --------------------
# Only pyproject.toml feeds it, so editing the code reuses this (slow, large) layer.
FROM ${BASE_IMAGE} AS deps
# scripts/docker-extra/ may hold a pip.conf (index and TLS settings), a CA bundle and wheels
# (e.g. the torch wheel) prepared by scripts/docker-test.sh; it is empty in a plain clone.
COPY scripts/docker-extra/ /tmp/extra/
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=180
RUN set -eux; \
    if [ -f /tmp/extra/pip.conf ]; then export PIP_CONFIG_FILE=/tmp/extra/pip.conf; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --upgrade pip setuptools wheel; \
    if ls /tmp/extra/wheels/torch-2.13.0*.whl >/dev/null 2>&1; then \
        /opt/venv/bin/pip install /tmp/extra/wheels/torch-2.13.0*.whl; \
    else \
        /opt/venv/bin/pip install "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu; \
    fi
COPY pyproject.toml /tmp/pyproject.toml
RUN set -eux; \
    if [ -f /tmp/extra/pip.conf ]; then export PIP_CONFIG_FILE=/tmp/extra/pip.conf; fi; \
    /opt/venv/bin/python -c "import tomllib; print('\\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" >/tmp/requirements.txt; \
    /opt/venv/bin/pip install -r /tmp/requirements.txt

# ---- build stage: the package itself, as a wheel, with the probe's C kernels compiled in ---
# setup.py builds the kernels as an optional extension module with the stage's C compiler.
# Best effort: where no compiler can be installed (no Debian mirror reachable), the wheel has
# no extension and the image's probe computes the same numbers with tensor ops, more slowly.
FROM deps AS build
RUN set -ux; \
    command -v cc >/dev/null || { apt-get update -qq -o Acquire::Retries=1 \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           gcc libc6-dev >/dev/null; } || echo "no C compiler here: the image's probe uses tensor ops"
COPY pyproject.toml setup.py README.md /src/
COPY backend/ /src/backend/
COPY frontend/ /src/frontend/
RUN set -eux; \
    if [ -f /tmp/extra/pip.conf ]; then export PIP_CONFIG_FILE=/tmp/extra/pip.conf; fi; \
    /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels /src

# ---- runtime stage: the venv, a user, a data volume -------------------------------------
FROM ${BASE_IMAGE}
RUN useradd --uid 10001 --create-home --home-dir /home/depthscope depthscope \
    && mkdir -p /data \
    && chown depthscope:depthscope /data
COPY --from=deps /opt/venv /opt/venv
COPY --from=build /wheels/ /tmp/wheels/
RUN /opt/venv/bin/pip install --no-deps --no-cache-dir /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && /opt/venv/bin/python -c "import depthscope.service.app, torch; print(torch.__version__)" \
    && /opt/venv/bin/python -m depthscope.probe.backends.kernels
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER depthscope
WORKDIR /home/depthscope
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=4)"]
# 0.0.0.0 inside the container only: outside, publish it where you want (e.g. -p 127.0.0.1:8000:8000).
ENTRYPOINT ["depthscope"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--data-dir", "/data"]
