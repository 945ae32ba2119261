"""transformers-side helpers (tiny test models, HF checkpoints). Imports transformers; keep out of pure modules."""
