"""Plumbing shared by the estimators, the command line and the tools.

Nothing here is part of the user-facing API; every other module imports its shared helpers
from here rather than from another public module's private names:

- :mod:`.validation`: checks of images, grids, image sizes and decision options;
- :mod:`.labels`: checks of image labels, scores, masks and maps;
- :mod:`.tensors`: NumPy arrays seen as torch tensors, and why hot loops stay in torch;
- :mod:`.chunking`: work split into chunks of bounded memory;
- :mod:`.progress`: the progress bar;
- :mod:`.pipeline`: the one walk from a fitted model to its feature step, detector and threshold;
- :mod:`.scores`: image scores on the scale of the training images.
"""
