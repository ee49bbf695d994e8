"""cluster.kmeans: weight sharing. Each layer's weights snap to N shared values (k-means).

tfmot clusters every Dense/Conv kernel into ``clusters`` centroids
(k-means++ initialisation), fine-tunes the centroids briefly, and strips the
wrappers, leaving a plain model whose kernels hold at most N distinct
values. The sidecar records, per layer, the distinct values and what the
survey's storage would take: a float32 codebook plus log2(N)-bit indices,
and the same indices Huffman-coded. With 4 clusters an index is 2 bits.
``preserve_sparsity`` keeps pruned zeros at zero, so prune → cluster stacks.
"""

from pydantic import Field

from slimlab import hookimpl
from slimlab.kit.coding import codebook_storage
from slimlab.stages import Stage, StageParams
from slimlab.kit.training import compile_and_fit


class ClusterParams(StageParams):
    clusters: int = Field(16, ge=2, le=256, description="shared values per layer")
    preserve_sparsity: bool = Field(True, description="keep zero weights at zero (after pruning)")
    epochs: int = Field(2, ge=0, le=10000, description="fine-tuning epochs for the centroids")
    batch_size: int = Field(64, ge=1, le=65536)
    learning_rate: float = Field(1e-4, gt=0, le=10)


def cluster_kmeans(artifact, params: ClusterParams, ctx):
    """Share weights: k-means++ clusters per layer, fine-tuned; records codebook and Huffman sizes."""
    import tensorflow_model_optimization as tfmot

    clustering = tfmot.clustering.keras
    model = clustering.cluster_weights(
        artifact.model,
        number_of_clusters=params.clusters,
        cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS,
        preserve_sparsity=params.preserve_sparsity,
    )
    if params.epochs:
        ctx.record(history=compile_and_fit(model, ctx.splits, epochs=params.epochs, batch_size=params.batch_size,
                                           learning_rate=params.learning_rate, seed=ctx.seed))
    model = clustering.strip_clustering(model)
    layers = {layer.name: codebook_storage(layer.kernel.numpy()) for layer in model.layers if hasattr(layer, "kernel")}
    # Biases and unclustered layers stay float32.
    other_params = model.count_params() - sum(s["dense_bytes"] // 4 for s in layers.values())
    ctx.record(clustering={
        "layers": layers,
        "codebook_index_bytes": sum(s["codebook_index_bytes"] for s in layers.values()) + 4 * other_params,
        "huffman_bytes": sum(s["huffman_bytes"] for s in layers.values()) + 4 * other_params,
        "dense_bytes": 4 * model.count_params(),
    })
    return model


@hookimpl
def register_stages(register):
    register(Stage("cluster.kmeans", cluster_kmeans, ClusterParams, inputs=("keras",), output="keras", fine_tunes=True))
