# One image for the receiver, the edges and the demo. CPU by default; the torch wheel of the
# package index also runs on NVIDIA GPUs when the container is given one (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# dependencies first, so that code changes do not reinstall them
COPY pyproject.toml README.md ./
RUN mkdir -p shared server edge_client ndpca training channel_traces \
 && pip install torch==2.13.0 \
 && pip install .

# the code, the committed channel traces and any trained checkpoints/ (see .dockerignore)
COPY . .
RUN pip install --no-deps .

RUN useradd --create-home ndpca && mkdir -p /data && chown ndpca /data
USER ndpca
EXPOSE 8000
CMD ["ndpca", "--help"]
