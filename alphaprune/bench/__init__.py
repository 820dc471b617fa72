"""Benchmarks (docs/performance.md): `python -m alphaprune.bench --out=FILE.json [--quick]`.

    timing      programs measured in turn, their medians and the spread of a ratio
    training    the step figures (blends, the driver's dense step, regression) and memory
    inputs      the input overhead on either pipeline, the streamed pipeline's data-only
                rate, the compilations of a whole run
    compact     the compact export's speedup
    keras_peer  the Keras peer (the only module that imports TensorFlow: extra `bench`)

The bench measures; nothing in the product imports it.
"""

from alphaprune.bench.timing import interleaved, interleaved_samples, medians, quartiles

__all__ = ["interleaved", "interleaved_samples", "medians", "quartiles"]
