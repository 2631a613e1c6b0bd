"""`lora-bot serve`: the webhook service (optional extra `serve`: Starlette + uvicorn)."""
