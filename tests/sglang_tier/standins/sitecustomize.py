"""TEST-ONLY: loaded at start-up in every process of the SGLang tier (this folder is on
PYTHONPATH, so SGLang's spawned scheduler processes get it too). Gives SGLang's torch_native
attention backend the TARGET_VERIFY mode it lacks on CPU, and lets EAGLE's draft worker use it
for its draft extend, each once the module concerned is imported."""

import importlib.abc
import importlib.machinery
import sys


def _patch_attention(module) -> None:
    import torch

    cls = module.TorchNativeAttnBackend
    plain_extend = cls.forward_extend

    def forward_extend(self, q, k, v, layer, forward_batch, save_kv_cache=True):
        if not forward_batch.forward_mode.is_target_verify():
            return plain_extend(self, q, k, v, layer, forward_batch, save_kv_cache)
        # Verify: each request's n draft tokens see its whole verified prefix, and the drafts
        # its tree mask allows (spec_info.custom_mask: per request n x n for NGRAM's tree, or
        # n x (prefix + n) row-major, the layout SGLang's Triton backend reads).
        cache_loc = forward_batch.out_cache_loc
        if save_kv_cache and k is not None and v is not None:
            self.token_to_kv_pool.set_kv_buffer(layer, cache_loc, k, v)
        k_cache = self.token_to_kv_pool.get_key_buffer(layer.layer_id)
        v_cache = self.token_to_kv_pool.get_value_buffer(layer.layer_id)
        spec = forward_batch.spec_info
        n = spec.draft_token_num
        q_ = q.view(-1, layer.tp_q_head_num, layer.qk_head_dim)
        out = q_.new_empty((q_.shape[0], layer.tp_q_head_num, layer.v_head_dim))
        mask_all = spec.custom_mask.bool()
        offset = 0
        req_to_token = self.req_to_token_pool.req_to_token
        for b, prefix in enumerate(forward_batch.seq_lens.tolist()):
            rows = slice(b * n, (b + 1) * n)
            kv_loc = torch.cat(
                [req_to_token[forward_batch.req_pool_indices[b], :prefix].long(),
                 cache_loc[rows].long()]
            )  # fmt: skip
            keys = k_cache[kv_loc].movedim(0, 1)  # [heads, prefix + n, dim]
            values = v_cache[kv_loc].movedim(0, 1)
            if mask_all.numel() == len(forward_batch.seq_lens) * n * n:  # NGRAM: drafts only
                tree = mask_all[b * n * n : (b + 1) * n * n].view(n, n)
                mask = torch.cat([tree.new_ones((n, prefix)), tree], dim=1)
            else:  # prefix + drafts per request (the Triton backend's layout)
                mask = mask_all[offset : offset + n * (prefix + n)].view(n, prefix + n)
                offset += n * (prefix + n)
            o = torch.nn.functional.scaled_dot_product_attention(
                q_[rows].movedim(0, 1),
                keys,
                values,
                attn_mask=mask,
                scale=layer.scaling,
                enable_gqa=layer.tp_q_head_num != layer.tp_k_head_num,
            )
            out[rows] = o.movedim(1, 0)
        return out.reshape(q.shape[0], -1)

    cls.forward_extend = forward_extend


def _patch_draft_backends(module) -> None:
    """EAGLE's draft worker asks for its attention backends by name and knows no torch_native
    ones: give it torch_native's for the draft extend, and for the draft steps (topk 1 only)
    one decode backend per step that also sees the step's earlier draft tokens."""
    from sglang.srt.layers.attention.torch_native_backend import TorchNativeAttnBackend

    class DraftStep(TorchNativeAttnBackend):
        def __init__(self, runner, step):
            super().__init__(runner)
            self.step = step

        def forward_decode(self, q, k, v, layer, forward_batch, save_kv_cache=True):
            # Step i's query sees the prefix and draft tokens 0..i, which (topk 1) sit right
            # after the prefix in req_to_token: the same rule as SGLang's multi-step backends
            # ("each candidate sees prefix + (step + 1) draft tokens").
            seq_lens = forward_batch.seq_lens
            forward_batch.seq_lens = seq_lens + self.step + 1
            try:
                return super().forward_decode(q, k, v, layer, forward_batch, save_kv_cache)
            finally:
                forward_batch.seq_lens = seq_lens

    class DraftSteps:
        def __init__(self, runner, topk, steps):
            if topk != 1:
                raise NotImplementedError("test stand-in: torch_native draft steps need topk 1")
            self.attn_backends = [DraftStep(runner, i) for i in range(steps - 1)]

        def init_forward_metadata(self, forward_batch):
            for backend in self.attn_backends:
                backend.init_forward_metadata(forward_batch)

    cls = module.DraftBackendFactory
    plain = cls._create_backend

    def _create_backend(self, backend_name, backend_map, error_template, stamps_children=False):
        runner = self.draft_model_runner

        def make():
            if stamps_children:  # the draft steps (create_decode_backend)
                return "torch_native", DraftSteps(runner, self.topk, self.speculative_num_steps)
            return "torch_native", TorchNativeAttnBackend(runner)  # the draft extend

        return plain(self, backend_name, {**backend_map, "torch_native": make}, error_template,
                     stamps_children)  # fmt: skip

    cls._create_backend = _create_backend


_PATCHES = {
    "sglang.srt.layers.attention.torch_native_backend": _patch_attention,
    "sglang.srt.speculative.draft_utils": _patch_draft_backends,
}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        patch = _PATCHES.get(fullname)
        if patch is None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, _PatchOnImport())
