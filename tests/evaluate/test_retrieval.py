"""Retrieval ranks and recall@k against a brute-force loop, with uneven captions per image and exact ties."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferlab.evaluate.retrieval import retrieval_ranks, retrieval_recall


def captioned(n_images, seed, sign_vectors=False):
    """Images with 1–5 captions each, the captions in shuffled order; ±1/4 vectors in 16-d tie exactly."""
    rng = np.random.default_rng(seed)
    owner = rng.permutation(np.repeat(np.arange(n_images), rng.integers(1, 6, n_images)))
    if sign_vectors:
        patterns = rng.choice([-0.25, 0.25], size=(10, 16))
        images, texts = patterns[rng.integers(0, 10, n_images)], patterns[rng.integers(0, 10, len(owner))]
    else:
        images = rng.normal(size=(n_images, 16))
        texts = 0.7 * images[owner] + rng.normal(size=(len(owner), 16))
    return images, texts, owner


def brute_force(images, texts, owner):
    """Positions in stable argsorts of -similarity, one query at a time."""
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    texts = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    similarities = images @ texts.T
    image_ranks = [min(np.flatnonzero(owner[np.argsort(-row, kind="stable")] == i))
                   for i, row in enumerate(similarities)]
    text_ranks = [int(np.flatnonzero(np.argsort(-column, kind="stable") == owner[j])[0])
                  for j, column in enumerate(similarities.T)]
    return np.array(image_ranks), np.array(text_ranks)


@pytest.mark.parametrize("sign_vectors", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_ranks_and_recall_match_brute_force(seed, sign_vectors):
    images, texts, owner = captioned(60, seed, sign_vectors)
    expected_image, expected_text = brute_force(images, texts, owner)
    image_ranks, text_ranks = retrieval_ranks(images, texts, owner)
    assert np.array_equal(image_ranks, expected_image) and np.array_equal(text_ranks, expected_text)

    recall = retrieval_recall(images, texts, owner, ks=(1, 5, 10))
    for k in (1, 5, 10):
        assert recall[f"text_retrieval_recall@{k}"] == np.mean(expected_image < k)
        assert recall[f"image_retrieval_recall@{k}"] == np.mean(expected_text < k)
    assert 0 < recall["text_retrieval_recall@1"] < recall["text_retrieval_recall@10"] < 1
    if sign_vectors:  # 10 distinct vectors among 60 images and ~180 captions: most scores are tied
        assert len(np.unique(images @ texts.T)) <= 17


def test_blocks_and_devices_do_not_change_ranks():
    images, texts, owner = captioned(50, 2)
    whole = retrieval_ranks(images, texts, owner, batch_size=1024)
    blocks = retrieval_ranks(torch.tensor(images, dtype=torch.float64), torch.tensor(texts), torch.tensor(owner),
                             batch_size=7)
    assert all(np.array_equal(a, b) for a, b in zip(whole, blocks, strict=True))


def test_direction_and_key_names_on_a_hand_made_case():
    """Image 0 has captions 0 and 1, image 1 has caption 2; the two directions give different recalls."""
    images = np.array([[1.0, 0.0], [0.0, 1.0]])
    texts = np.array([[0.0, 1.0], [0.9, 0.1], [1.0, 0.2]])
    recall = retrieval_recall(images, texts, [0, 0, 1], ks=(1, 2))
    # image→text: image 0 ranks caption 1 (its own) first; image 1 ranks caption 0 (image 0's) first, its own second
    # text→image: caption 0 finds image 1 first (wrong), caption 1 image 0 (right), caption 2 image 0 (wrong)
    assert recall == {"text_retrieval_recall@1": 0.5, "text_retrieval_recall@2": 1.0,
                      "image_retrieval_recall@1": pytest.approx(1 / 3), "image_retrieval_recall@2": 1.0,
                      "mean_recall@1": pytest.approx((0.5 + 1 / 3) / 2), "mean_recall@2": 1.0}


def test_bad_caption_owners_are_refused():
    images, texts = np.eye(3), np.eye(3)
    with pytest.raises(ValueError, match="image 1"):
        retrieval_ranks(images, texts, [0, 2, 2])
    with pytest.raises(ValueError, match="text_to_image"):
        retrieval_ranks(images, texts, [0, 1, 3])
    with pytest.raises(ValueError, match="text_to_image"):
        retrieval_ranks(images, texts, [0, 1])
