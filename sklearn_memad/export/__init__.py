"""ONNX export of a fitted pipeline: uint8 images in, image scores, pixel maps and labels out.

:func:`to_onnx` writes one graph that does everything the Python pipeline does between the
images and :func:`~sklearn_memad.maps.predict_anomaly_maps`'s results: resizing and
normalisation, the backbone's layers, local aggregation or random projection, the detector's
patch scores, the image score, and the upsampled, smoothed pixel maps. :func:`as_torch_module`
gives the same computation as a ``torch.nn.Module``, which is what is exported.

The graph's fitted arrays are the estimator's own; PatchCore always searches exactly (its
``search="approximate"`` is a speed-up of the Python scorer, not part of the model).
"""

from ._graph import INPUT_NAME, OUTPUT_NAMES, as_torch_module, to_onnx

__all__ = ["INPUT_NAME", "OUTPUT_NAMES", "as_torch_module", "to_onnx"]
