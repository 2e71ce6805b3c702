# The worker image the k8s/ manifests run. Built elsewhere: this machine has no Docker engine.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY payments_app ./payments_app
COPY tables ./tables
COPY web ./web
RUN pip install --no-cache-dir .
USER 1000
EXPOSE 6066
CMD ["faust", "-A", "payments_app.worker", "-L", "uvloop", "worker", "--web-port", "6066"]
