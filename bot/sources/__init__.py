"""Where files come from: a local folder (`local`) or a Hub repo (`bot.sources.hub`). Both yield FileEvidence."""
