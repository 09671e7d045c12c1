from __future__ import annotations

import torch

from clbench.config import PRESETS
from clbench.data.inputs import FiLMInput
from clbench.model.film import FiLM, GrowingEmbedding, ModelConfig

TINY = PRESETS["tiny"].model


def _batch(config: ModelConfig, vocab: int, batch: int = 4, length: int = 7) -> FiLMInput:
    images = torch.randint(0, 256, (batch, 3, config.image_height, config.image_width), dtype=torch.uint8)
    questions = torch.randint(1, vocab, (batch, length))
    return FiLMInput(images, questions, torch.full((batch,), length))


def test_forward_gives_one_logit_per_answer_and_keeps_film_parameters():
    model = FiLM(vocab_size=20, num_answers=28, config=TINY)
    logits = model(_batch(TINY, 20))
    assert logits.shape == (4, 28)
    gammas, betas = model.last_film
    assert gammas.shape == betas.shape == (4, TINY.num_modules, TINY.module_dim)


def test_gamma_offset_is_added_to_predicted_gammas():
    torch.manual_seed(0)
    model = FiLM(20, 28, TINY).eval()
    torch.nn.init.zeros_(model.generator.film.weight)
    torch.nn.init.zeros_(model.generator.film.bias)
    model(_batch(TINY, 20))
    gammas, betas = model.last_film
    assert torch.all(gammas == TINY.gamma_offset) and torch.all(betas == 0)


def test_vocab_grows_without_moving_old_rows():
    embedding = GrowingEmbedding(10, 4)
    old = embedding.embedding.weight.detach().clone()
    embedding.grow_to(15)
    assert embedding.num_embeddings == 15
    assert torch.equal(embedding.embedding.weight[:10], old)
    embedding.grow_to(12)  # never shrinks
    assert embedding.num_embeddings == 15


def test_generator_reads_the_state_at_each_questions_last_token():
    """Padding after a question must not change its (gamma, beta)."""
    torch.manual_seed(0)
    model = FiLM(20, 28, TINY).eval()
    short = _batch(TINY, 20, batch=2, length=5)
    padded = FiLMInput(
        short.images, torch.cat([short.questions, torch.zeros(2, 3, dtype=torch.long)], 1), short.lengths
    )
    g1, b1 = model.generator(short.questions, short.lengths)
    g2, b2 = model.generator(padded.questions, padded.lengths)
    assert torch.allclose(g1, g2) and torch.allclose(b1, b2)


def test_filmed_input_moves_as_one_object():
    batch = _batch(TINY, 20).to("cpu")
    assert isinstance(batch, FiLMInput)
