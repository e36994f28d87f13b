"""TEST-ONLY pure-torch versions of the sgl_kernel CPU ops SGLang 0.5.23 calls for NGRAM and
EAGLE-family (one draft step) speculative decoding on a CPU. Each follows the contract of
SGLang's own Triton kernel of the same job (file named in its docstring); loops over a batch are
fine at test sizes."""

from __future__ import annotations

import ctypes

__all__ = [
    "assign_draft_cache_locs_contiguous_cpu",
    "assign_extend_cache_locs_cpu",
    "assign_req_to_token_pool_cpu",
    "build_tree_kernel_efficient_cpu",
    "copy_all_layer_kv_cache_cpu",
    "fill_accept_out_cache_loc_cpu",
    "fill_bonus_tokens_cpu",
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


def assign_draft_cache_locs_contiguous_cpu(req_pool_indices, req_to_token, seq_lens,
                                           out_cache_loc, pool_len, topk, num_steps):  # fmt: skip
    """kernels/ops/speculative/cache_locs.py assign_draft_cache_locs_contiguous: request b's
    topk * num_steps pool slots from seq_lens[b] on, into out_cache_loc[b * topk * num_steps:]."""
    n = topk * num_steps
    for b, start in enumerate(seq_lens.tolist()):
        row = int(req_pool_indices[b])
        out_cache_loc[b * n : (b + 1) * n] = req_to_token[row, start : start + n].to(
            out_cache_loc.dtype
        )


def fill_accept_out_cache_loc_cpu(accept_index, out_cache_loc, accept_out_cache_loc):
    """kernels/ops/speculative/eagle.py fill_accept_out_cache_loc: the cache locations of the
    accepted entries (accept_index != -1), packed in order."""
    keep = accept_index[accept_index != -1].long()
    accept_out_cache_loc[: keep.numel()] = out_cache_loc[keep].to(accept_out_cache_loc.dtype)


def build_tree_kernel_efficient_cpu(
    parent_list, selected_index, verified_seq_len, tree_mask, positions, retrieve_index,
    retrieve_next_token, retrieve_next_sibling, topk, depth, n, tree_mask_mode,
):  # fmt: skip
    """kernels/ops/speculative/spec_tree.py sgl_build_tree_kernel_efficient_triton, line for
    line per request b: node 0 is the verified token, node i > 0 is selected_index[b, i - 1];
    a node's parent is found through parent_list (topk children per parent); the links go to
    retrieve_next_token / _sibling, each node's mask row gets itself and its ancestors, its
    position is its depth + verified_seq_len[b]. Mask modes: 0 = FULL_MASK (prefix + n columns
    per row, requests packed), else QLEN_ONLY (n x n per request)."""
    bs = verified_seq_len.shape[0]
    seq_lens = verified_seq_len.tolist()
    prefix_sum = [sum(seq_lens[:b]) for b in range(bs)]
    sel = selected_index.reshape(bs, -1).tolist()
    parents = parent_list.reshape(bs, -1).tolist() if parent_list.numel() else [[]] * bs
    nxt, sib = retrieve_next_token.view(bs, n), retrieve_next_sibling.view(bs, n)
    ridx, pos = retrieve_index.view(bs, n), positions.view(bs, n)

    def where(b, token):  # position of a parent token among the selected ones, or None
        return next((pp for pp in range(n - 1) if sel[b][pp] == token), None)

    for b in range(bs):
        seq_len = seq_lens[b]
        pos[b, 0] = seq_len
        for i in range(n - 1, 0, -1):
            ridx[b, i] = b * n + i
            parent_tb = sel[b][i - 1] // topk
            at = 0 if parent_tb == 0 else where(b, parents[b][parent_tb])
            if at is not None:
                at = at if parent_tb == 0 else at + 1
                prev = int(nxt[b, at])
                nxt[b, at] = i
                if prev != -1:
                    sib[b, i] = prev
        ridx[b, 0] = b * n
        for x in range(n):
            if tree_mask_mode == 0:
                row = n * n * b + prefix_sum[b] * n + (seq_len + n) * x + seq_len + 1
            else:
                row = n * n * b + n * x + 1
            tree_mask[row - 1] = 1
            tree_mask[row : row + n - 1] = 0
            if x > 0:
                cur, position = x - 1, 0
                for _ in range(depth):
                    position += 1
                    tree_mask[row + cur] = 1
                    parent_tb = sel[b][cur] // topk
                    if parent_tb == 0:
                        break
                    cur = where(b, parents[b][parent_tb])
                    if cur is None:
                        break
                pos[b, x] = position + seq_len


def fill_bonus_tokens_cpu(accept_tokens, accept_lens, bonus_tokens, accept_stride):
    """kernels/ops/speculative/eagle.py fill_bonus_tokens: request b's bonus token is its last
    accepted slot, accept_tokens[accept_stride * b + accept_lens[b] - 1]."""
    flat = accept_tokens.reshape(-1)
    for b, length in enumerate(accept_lens.tolist()):
        bonus_tokens[b] = flat[accept_stride * b + length - 1]


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
