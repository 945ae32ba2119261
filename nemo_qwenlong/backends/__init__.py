"""Heavy backends: megatron-core policy, vLLM / transformers generators. Only here may megatron,
vllm and transformer_engine be imported; nothing outside `backends` imports this package eagerly."""
