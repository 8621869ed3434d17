"""pytest plugin: the session fixture ``tiny_models`` (load it with ``pytest_plugins = ["tiny_model_fixture"]``).

It serves, once per test session and without torch, copies of the committed models of ``tests/fixture/models``:

- ``tiny``: 16 channels, 4 latent channels (fast; most tests);
- ``tiny1028``: 1028 channels, 32 latent channels (real TEMPO chunk and latent sizes);
- ``other/tiny``: a second model named ``tiny`` with other statistics, hence a different sha256
  (:func:`tiny_model.model_variant`),

and puts the directory of the first two on ``TEMPOCODEC_MODELS`` so that codecs find them by name. Copies, so that
no test can change the committed files.
"""

from __future__ import annotations

import os
import shutil

import pytest
from tiny_model import FIXTURE_MODELS, TinyModels, model_variant

from tempocodec.runtime.artifacts import MODELS_ENV


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """Copy the tiny models once per session and put them on ``TEMPOCODEC_MODELS`` while the session runs."""
    root = tmp_path_factory.mktemp("tiny_models")
    small = shutil.copytree(FIXTURE_MODELS / "tiny", root / "tiny")
    models = TinyModels(
        root=root,
        small=small,
        full=shutil.copytree(FIXTURE_MODELS / "tiny1028", root / "tiny1028"),
        other=model_variant(small, root.parent / f"{root.name}_other" / "tiny", shift=0.5),
    )
    previous = os.environ.get(MODELS_ENV)
    os.environ[MODELS_ENV] = str(models.root)
    yield models
    if previous is None:
        os.environ.pop(MODELS_ENV, None)
    else:
        os.environ[MODELS_ENV] = previous
