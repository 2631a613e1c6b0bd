"""lora-bot: finds and fixes broken LoRA adapters on the Hugging Face Hub."""

__version__ = "0.1.0"
