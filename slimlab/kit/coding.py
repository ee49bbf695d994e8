"""Entropy-coded storage sizes: what a codebook + index + Huffman layout would take on disk."""

import heapq
import math
from collections import Counter

import numpy as np


def huffman_code_lengths(symbols: np.ndarray) -> dict:
    """Code length in bits of each distinct symbol of an optimal prefix (Huffman) code."""
    counts = Counter(symbols.ravel().tolist())
    if len(counts) == 1:
        return {next(iter(counts)): 1}
    # Heap of (frequency, tie-breaker, {symbol: depth}); merging two subtrees deepens both by one.
    heap = [(n, i, {s: 0}) for i, (s, n) in enumerate(counts.items())]
    heapq.heapify(heap)
    tie = len(heap)
    while len(heap) > 1:
        n1, _, a = heapq.heappop(heap)
        n2, _, b = heapq.heappop(heap)
        heapq.heappush(heap, (n1 + n2, tie, {s: d + 1 for s, d in {**a, **b}.items()}))
        tie += 1
    return heap[0][2]


def codebook_storage(weights: np.ndarray) -> dict:
    """Bytes to store a weight-shared tensor as a float32 codebook plus fixed-width or Huffman indices."""
    codebook, indices = np.unique(weights.ravel(), return_inverse=True)
    index_bits = max(1, math.ceil(math.log2(len(codebook))))
    lengths = huffman_code_lengths(indices)
    huffman_bits = sum(lengths[s] * n for s, n in Counter(indices.tolist()).items())
    codebook_bytes = 4 * len(codebook)
    return {
        "unique": int(len(codebook)),
        "index_bits": index_bits,
        "dense_bytes": 4 * weights.size,
        "codebook_index_bytes": codebook_bytes + math.ceil(weights.size * index_bits / 8),
        # The decoder also needs each code's length: one byte per codebook entry.
        "huffman_bytes": codebook_bytes + len(codebook) + math.ceil(huffman_bits / 8),
        "huffman_bits_per_weight": huffman_bits / weights.size,
    }
