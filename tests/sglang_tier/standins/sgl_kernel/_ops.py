"""TEST-ONLY pure-torch versions of the sgl_kernel CPU ops SGLang 0.5.23 calls for NGRAM
speculative decoding on a CPU. Each follows the contract of SGLang's own Triton kernel of the
same job (file named in its docstring); loops over a batch are fine at test sizes."""

from __future__ import annotations

import ctypes

__all__ = [
    "assign_extend_cache_locs_cpu",
    "assign_req_to_token_pool_cpu",
    "copy_all_layer_kv_cache_cpu",
    "fill_accept_out_cache_loc_cpu",
    "verify_tree_greedy_cpu",
]


def _segments(start_offset, end_offset):
    start, end = start_offset.tolist(), end_offset.tolist()
    out, offset = [], 0
    for s, e in zip(start, end, strict=True):
        out.append((s, e, offset))
        offset += e - s
    return out


def assign_req_to_token_pool_cpu(req_pool_indices, req_to_token, start_offset, end_offset,
                                 out_cache_loc, pool_len):  # fmt: skip
    """srt/mem_cache/allocation.py assign_req_to_token_pool: request b's slots start..end in the
    pool take the next (end - start) entries of out_cache_loc, in batch order."""
    for b, (s, e, offset) in enumerate(_segments(start_offset, end_offset)):
        row = int(req_pool_indices[b])
        req_to_token[row, s:e] = out_cache_loc[offset : offset + e - s].to(req_to_token.dtype)


def assign_extend_cache_locs_cpu(req_pool_indices, req_to_token, start_offset, end_offset,
                                 out_cache_loc, pool_len):  # fmt: skip
    """kernels/ops/speculative/cache_locs.py assign_extend_cache_locs: the reverse copy, pool
    slots start..end of request b into the next entries of out_cache_loc."""
    for b, (s, e, offset) in enumerate(_segments(start_offset, end_offset)):
        row = int(req_pool_indices[b])
        out_cache_loc[offset : offset + e - s] = req_to_token[row, s:e].to(out_cache_loc.dtype)


def fill_accept_out_cache_loc_cpu(accept_index, out_cache_loc, accept_out_cache_loc):
    """kernels/ops/speculative/eagle.py fill_accept_out_cache_loc: the cache locations of the
    accepted entries (accept_index != -1), packed in order."""
    keep = accept_index[accept_index != -1].long()
    accept_out_cache_loc[: keep.numel()] = out_cache_loc[keep].to(accept_out_cache_loc.dtype)


def copy_all_layer_kv_cache_cpu(data_ptrs, strides, tgt_loc, src_loc):
    """kernels/ops/kvcache/cache_move.py: in every layer buffer (raw data pointer, bytes per
    token row), row src_loc[i] is copied to row tgt_loc[i]."""
    for ptr, stride in zip(data_ptrs.tolist(), strides.tolist(), strict=True):
        for t, s in zip(tgt_loc.tolist(), src_loc.tolist(), strict=True):
            if t != s:
                ctypes.memmove(ptr + t * stride, ptr + s * stride, stride)


def verify_tree_greedy_cpu(predicts, accept_index, accept_token_num, candidates, retrive_index,
                           retrive_next_token, retrive_next_sibling, target_predict):  # fmt: skip
    """kernels/ops/speculative/spec_tree.py verify_tree_greedy_kernel_triton: walk each
    request's draft tree from the root; at each level accept the first child (then siblings)
    whose token equals the target's prediction at the last accepted node; predicts[node] is
    the target token there, accept_index the accepted nodes (global), accept_token_num the
    number of drafts accepted."""
    bs, n = candidates.shape
    steps = accept_index.shape[1]
    flat_target = target_predict.reshape(-1)
    for b in range(bs):
        last = int(retrive_index[b, 0])
        accept_index[b, 0] = last
        accepted, cur = 0, 0
        for _ in range(1, steps):
            cur = int(retrive_next_token[b, cur])
            target = int(flat_target[last])
            matched = False
            while cur != -1:
                if int(candidates[b, cur]) == target:
                    predicts[last] = target
                    accepted += 1
                    last = int(retrive_index[b, cur])
                    accept_index[b, accepted] = last
                    matched = True
                    break
                cur = int(retrive_next_sibling[b, cur])
            if not matched:
                break
        accept_token_num[b] = accepted
        predicts[last] = int(flat_target[last])
