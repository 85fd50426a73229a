# tgsentinel: slim, non-root (uid 10001), state in the /app/data volume.
FROM python:3.11-slim AS build
WORKDIR /src
RUN python -m venv /opt/venv
# The dependencies alone first, from pyproject.toml's [project].dependencies: this layer is rebuilt
# only when pyproject.toml changes, not on every change to the code.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -r requirements.txt
# Then tgsentinel itself. The wheel carries alembic/ (as bot/migrations) and rules/ (as bot/defaults).
COPY README.md ./
COPY bot ./bot
COPY alembic ./alembic
COPY rules ./rules
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps .

FROM python:3.11-slim
# The HTTP server defaults to loopback; in a container it must listen on every interface to be
# published at all (compose publishes it on the host's 127.0.0.1 only).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TGSENTINEL_HTTP_HOST=0.0.0.0
RUN groupadd --system --gid 10001 tgsentinel \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin tgsentinel
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
# The example rules at ./rules (the default rules directory), so `docker run` works as it is;
# compose mounts the checkout's rules/ over them.
COPY rules ./rules
RUN mkdir -p /app/data && chown 10001:10001 /app/data
# Numeric, so the runtime (and Kubernetes' runAsNonRoot) can tell it is not root without /etc/passwd.
USER 10001:10001
VOLUME ["/app/data"]
EXPOSE 8080
# Exec form cannot expand variables, so the probe reads TGSENTINEL_HTTP_PORT itself. urlopen raises
# on a 503, which exits 1: unhealthy.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('TGSENTINEL_HTTP_PORT') or '8080'; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
ENTRYPOINT ["tgsentinel"]
CMD ["run"]
