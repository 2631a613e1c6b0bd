"""lora-bot: finds and fixes broken LoRA adapters on the Hugging Face Hub."""

__version__ = "0.1.0"


def check(adapter, base, **options):
    """Will `adapter` load on `base`? A `CheckResult` from headers alone (see `bot.checking.check`)."""
    from bot.checking import check as _check

    return _check(adapter, base, **options)


def ensure_loads(adapter, base, **options):
    """`check`, raising `bot.checking.IncompatibleAdapterError` unless the adapter loads fully."""
    from bot.checking import ensure_loads as _ensure_loads

    return _ensure_loads(adapter, base, **options)
