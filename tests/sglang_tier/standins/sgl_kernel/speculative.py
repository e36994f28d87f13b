"""TEST-ONLY: sgl_kernel.speculative.reconstruct_indices_from_tree_mask in torch, to the
contract quoted in sglang/kernels/ops/speculative/reconstruct_tree.py."""

from __future__ import annotations

import torch


def reconstruct_indices_from_tree_mask(tree_mask, verified_seq_len, positions, retrieve_index,
                                       retrieve_next_token, retrieve_next_sibling, batch_size,
                                       draft_token_num):  # fmt: skip
    """Per batch b and node i of n = draft_token_num, with ancestors[i, j] = mask[b, i, j] and
    j < i: positions = #ancestors + verified_seq_len[b]; retrieve_index = b * n + i; parent =
    last ancestor; next_token = first k > i whose ancestors include i; next_sibling = first
    k > i with the same parent (-1 for the root)."""
    n = draft_token_num
    mask = tree_mask.reshape(batch_size, n, n).bool()
    lower = torch.tril(torch.ones(n, n, dtype=torch.bool), diagonal=-1)
    for b in range(batch_size):
        anc = mask[b] & lower
        positions.view(batch_size, n)[b] = anc.sum(1) + int(verified_seq_len[b])
        retrieve_index.view(batch_size, n)[b] = torch.arange(n) + b * n
        parent = [max((j for j in range(i) if anc[i, j]), default=-1) for i in range(n)]
        nxt = retrieve_next_token.view(batch_size, n)[b]
        sib = retrieve_next_sibling.view(batch_size, n)[b]
        for i in range(n):
            nxt[i] = next((k for k in range(i + 1, n) if anc[k, i]), -1)
            sib[i] = (
                next((k for k in range(i + 1, n) if parent[k] == parent[i]), -1)
                if parent[i] >= 0
                else -1
            )
