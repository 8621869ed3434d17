"""pytest plugin: the session fixture ``tiny_models`` (load it with ``pytest_plugins = ["tiny_model_fixture"]``).

It exports, once per test session:

- ``tiny``: 16 channels, 4 latent channels (fast; most tests);
- ``tiny1028``: 1028 channels, 32 latent channels (real TEMPO chunk and latent sizes);
- ``other/tiny``: a second model named ``tiny`` with other weights (a different sha256),

and puts the directory of the first two on ``TEMPOCODEC_MODELS`` so that codecs find them by name.
"""

from __future__ import annotations

import os

import pytest
from tiny_model import SMALL_CHANNELS, TinyModels, export_tiny

from tempocodec.runtime.artifacts import MODELS_ENV


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """Export the tiny models once per session and put them on ``TEMPOCODEC_MODELS`` while the session runs."""
    root = tmp_path_factory.mktemp("tiny_models")
    models = TinyModels(
        root=root,
        small=export_tiny(root / "tiny", "tiny", SMALL_CHANNELS, 4, seed=0),
        full=export_tiny(root / "tiny1028", "tiny1028", 1028, 32, seed=0),
        other=export_tiny(root.parent / f"{root.name}_other" / "tiny", "tiny", SMALL_CHANNELS, 4, seed=1),
    )
    previous = os.environ.get(MODELS_ENV)
    os.environ[MODELS_ENV] = str(models.root)
    yield models
    if previous is None:
        os.environ.pop(MODELS_ENV, None)
    else:
        os.environ[MODELS_ENV] = previous
