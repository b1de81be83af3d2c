"""Work files: the shapes of their arrays are read from the headers alone."""

import numpy as np

from transferlab.curate import workfiles


def test_shapes_are_those_of_the_stored_arrays_and_absent_names_are_left_out(tmp_path):
    file = workfiles.save(tmp_path / "work" / "a.tar.count.npz", "f", {}, image_embeddings=np.ones((5, 3), np.float32),
                          caption_embeddings=np.zeros((0, 7), np.float32), status=np.zeros(9, np.uint8))
    assert workfiles.shapes(file, ("image_embeddings", "caption_embeddings", "scores")) == {
        "image_embeddings": (5, 3), "caption_embeddings": (0, 7)}
    arrays, _ = workfiles.load(file, "f", "count")
    assert arrays["image_embeddings"].shape == (5, 3)
