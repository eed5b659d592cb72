# lcp's one image: the API (`lcp api`), a worker (`lcp worker --queue conversations|ops|forecasting`) and
# the one-off commands (`lcp db upgrade`, `lcp temporal setup`) are all this image; the command chooses.
# No container builder runs on lcp's development machines, so this file is not built in CI: see
# deploy/README.md ("The image") for how to build it and what it was checked against.

# --- build: a virtual environment with lcp and its dependencies (all from wheels) ----------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/lcp
WORKDIR /src
COPY pyproject.toml README.md ./
COPY workflows workflows
COPY activities activities
COPY workers workers
COPY api api
COPY cli cli
COPY inference inference
COPY policies policies
COPY chaos chaos
COPY temporal temporal
COPY store store
COPY lab lab
COPY settings settings
# A regular (not editable) install: the policy files and migrations go in as package data.
RUN /opt/lcp/bin/pip install --upgrade pip \
    && /opt/lcp/bin/pip install . \
    && /opt/lcp/bin/python -m compileall -q /opt/lcp

# --- run: the slim base, the virtual environment, no compilers, no pip cache, a non-root user -----------
FROM python:3.11-slim-bookworm
RUN groupadd --system --gid 10001 lcp \
    && useradd --system --uid 10001 --gid lcp --home-dir /tmp --no-create-home --shell /usr/sbin/nologin lcp \
    && mkdir -p /etc/lcp/policies /etc/lcp/tool-secrets /etc/lcp/temporal-tls
COPY --from=build /opt/lcp /opt/lcp
# Read-only root filesystem: everything lcp, Python, matplotlib or joblib writes goes under /tmp (an
# emptyDir in the manifests). LCP_HOME holds only the embedded defaults' files (SQLite, the lab's
# kubeconfig), which a deployment on PostgreSQL and a real cluster does not use.
ENV PATH=/opt/lcp/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    LCP_HOME=/tmp/lcp \
    MPLCONFIGDIR=/tmp/matplotlib \
    JOBLIB_TEMP_FOLDER=/tmp \
    LCP_API__HOST=0.0.0.0 \
    LCP_API__PORT=8000
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["lcp"]
CMD ["api"]
