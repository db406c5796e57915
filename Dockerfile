# The infleet operator image: `docker build -t infleet:0.1.0 .` (or `make image`).
#
# Two stages: the first installs infleet and its runtime dependencies (never the dev extras)
# into a virtual environment; the second copies only that environment onto the same pinned
# base and runs it as an unprivileged user. The chart runs it with a read-only root
# filesystem, so nothing here expects to write outside /tmp.

# Python 3.11 slim (Debian bookworm), pinned by version and by digest so a rebuild gets the
# same base. Bump both together.
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
# Runtime dependencies only: `.` and not `.[dev]`. Bytecode is compiled here, since the
# running container may not write it.
RUN python -m venv /opt/infleet \
    && /opt/infleet/bin/pip install . \
    && /opt/infleet/bin/pip uninstall --yes pip

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="infleet" \
      org.opencontainers.image.description="Kubernetes operator placing LLM inference fleets on heterogeneous accelerators" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/infleet/bin:${PATH} \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 infleet \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin infleet
COPY --from=build /opt/infleet /opt/infleet
# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["infleet"]
CMD ["run", "--all-namespaces"]
