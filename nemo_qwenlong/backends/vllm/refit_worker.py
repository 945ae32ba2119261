"""Worker extension for in-place weight refit, reached through `LLM.collective_rpc` by method name.

vLLM mixes this class into every worker (`worker_extension_cls`), so the same three calls refit a
TP=1 engine (uniprocessor executor: the tensors are passed by reference) and a TP>1 engine (worker
processes: each bucket's CPU tensors travel as the RPC's arguments through vLLM's shared-memory
broadcast queue, written once and read by every TP worker, which keeps its own shard):

    nql_refit_begin()           vLLM's layer-wise reload: restore the loading metadata, wrap loaders
    nql_refit_bucket(bucket)    the model's `load_weights` on HF-named full tensors (vLLM shards them
                                per TP rank and fuses q/k/v and gate/up; a layer is post-processed
                                as soon as all its weights have arrived)
    nql_refit_end()             post-load processing of what is left; drop caches of the old weights

This is `reload_weights` (vllm/model_executor/model_loader/reload/inplace.py) split at its bucket
loop, so the trainer can hand the stream over bucket by bucket instead of as one iterator.
"""

from __future__ import annotations

from torch import Tensor

EXTENSION = "nemo_qwenlong.backends.vllm.refit_worker.RefitWorkerExtension"


class RefitWorkerExtension:
    """Mixed into vLLM's Worker: `self.model_runner` and `self.vllm_config` are the worker's."""

    def nql_refit_begin(self) -> None:
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload.layerwise import initialize_layerwise_reload

        with set_current_vllm_config(self.vllm_config):
            initialize_layerwise_reload(self.model_runner.get_model())

    def nql_refit_bucket(self, bucket: list[tuple[str, Tensor]]) -> int:
        from vllm.config import set_current_vllm_config

        with set_current_vllm_config(self.vllm_config):
            self.model_runner.get_model().load_weights(iter(bucket))
        return len(bucket)

    def nql_refit_end(self) -> None:
        from vllm.config import set_current_vllm_config
        from vllm.model_executor.model_loader.reload.layerwise import finalize_layerwise_reload

        runner = self.model_runner
        with set_current_vllm_config(self.vllm_config):
            finalize_layerwise_reload(runner.get_model(), self.vllm_config.model_config)
        runner.reset_lora_state()  # as the worker's own reload_weights does after reloading
        runner.reset_encoder_cache()
        runner.reset_mm_cache()
