# lora-bot's webhook service (`lora-bot serve`), as a Hugging Face Space (Docker SDK) or anywhere.
# Space settings: secrets HF_TOKEN (the bot account's write token) and LORA_BOT_WEBHOOK_SECRET (the same
# secret as the Hub webhook's); the webhook's URL is https://<space-host>/webhook.
FROM python:3.11-slim

# resize needs QR/SVD, never a GPU: point TORCH_INDEX at a CPU-only torch wheel index to keep the image
# small (docker build --build-arg TORCH_INDEX=...); empty, pip's default index is used.
ARG TORCH_INDEX=""
RUN if [ -n "$TORCH_INDEX" ]; then pip install --no-cache-dir torch --index-url "$TORCH_INDEX"; fi

# Spaces run the container as user 1000; state (manners, the queue kept over restarts) lives in its home.
RUN useradd --create-home --uid 1000 bot
WORKDIR /home/bot/app
COPY --chown=bot pyproject.toml README.md config.yaml ./
COPY --chown=bot bot ./bot
RUN pip install --no-cache-dir ".[serve]"

USER bot
ENV HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1
EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/health')"
# SIGTERM (docker stop, a Space restart) shuts down gracefully: requests in flight answered, the scan in
# flight finished, waiting repos kept in .lora-bot/serve-queue.json for the next start.
CMD ["lora-bot", "serve", "--host", "0.0.0.0", "--port", "7860", "--config", "config.yaml"]
