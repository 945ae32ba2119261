"""nemo_qwenlong: QwenLong-L1 long-context reasoning RL on megatron-core and vLLM.

Importing the package (and its algorithms, rewards, data, curriculum and config modules) never
imports megatron, vllm or transformer_engine: those live only under `nemo_qwenlong.backends`.
"""

__version__ = "0.1.0"
