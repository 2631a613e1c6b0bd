"""Where files come from: a local folder (`local`) or a Hub repo (`bot.hub.remote`). Both yield FileEvidence."""
