"""Pure, data-driven parts of the engine: base-model signatures and their matcher."""
