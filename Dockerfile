# tgsentinel: slim, non-root, state in /app/data.
FROM python:3.11-slim AS build
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
RUN python -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TGSENTINEL_ALEMBIC_DIR=/app/alembic
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin tgsentinel
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY alembic ./alembic
COPY rules ./rules
RUN mkdir -p /app/data && chown tgsentinel:tgsentinel /app/data
USER tgsentinel
VOLUME ["/app/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["tgsentinel"]
CMD ["run"]
