"""The paper's augmentation on whole uint8 batches: pad 4, random 32×32 crop, random flip; seeded and resumable."""

import pytest
import torch

from depthstudy.augment import PADDING, crop_flip, draw, random_crop_flip


def batch(n: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def reference(images: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor, p: int = PADDING) -> torch.Tensor:
    """One image at a time, by slicing an explicitly zero-padded copy: what crop_flip must equal."""
    out = []
    for image, (row, col), flip in zip(images, offsets.tolist(), flips.tolist()):
        padded = torch.zeros(3, 32 + 2 * p, 32 + 2 * p, dtype=image.dtype)
        padded[:, p : p + 32, p : p + 32] = image
        crop = padded[:, row : row + 32, col : col + 32]
        out.append(crop.flip(-1) if flip else crop)
    return torch.stack(out)


def test_shape_dtype_and_device_are_kept_and_the_input_is_untouched():
    images = batch()
    before = images.clone()
    out = random_crop_flip(images, torch.Generator().manual_seed(0))
    assert (out.shape, out.dtype, out.device) == (images.shape, torch.uint8, images.device)
    assert torch.equal(images, before)


def test_a_flip_is_a_flip_and_the_centre_offset_is_the_image():
    images = batch(8)
    centre = torch.full((8, 2), PADDING)
    assert torch.equal(crop_flip(images, centre, torch.ones(8, dtype=torch.bool)), images.flip(-1))
    assert torch.equal(crop_flip(images, centre, torch.zeros(8, dtype=torch.bool)), images)


def test_every_crop_is_its_window_of_the_zero_padded_image():
    images = batch(256)
    offsets, flips = draw(256, torch.Generator().manual_seed(1))
    assert torch.equal(crop_flip(images, offsets, flips), reference(images, offsets, flips))


def test_corner_crops_bring_in_exactly_the_padding():
    images = torch.full((2, 3, 32, 32), 255, dtype=torch.uint8)
    out = crop_flip(images, torch.tensor([[0, 0], [8, 8]]), torch.zeros(2, dtype=torch.bool))
    assert not out[0, :, :4].any() and not out[0, :, :, :4].any() and out[0, :, 4:, 4:].eq(255).all()
    assert not out[1, :, 28:].any() and not out[1, :, :, 28:].any() and out[1, :, :28, :28].eq(255).all()


def test_same_seed_same_batch_different_seed_different_batch():
    images = batch()
    a = random_crop_flip(images, torch.Generator().manual_seed(7))
    assert torch.equal(a, random_crop_flip(images, torch.Generator().manual_seed(7)))
    assert not torch.equal(a, random_crop_flip(images, torch.Generator().manual_seed(8)))


def test_saved_generator_state_replays_the_following_batches():
    images, g = batch(), torch.Generator().manual_seed(3)
    random_crop_flip(images, g)  # an earlier batch of the run
    state = g.get_state()
    expected = [random_crop_flip(images, g) for _ in range(3)]
    resumed = torch.Generator()
    resumed.set_state(state)  # as a resumed run restores it from the checkpoint
    assert all(torch.equal(e, random_crop_flip(images, resumed)) for e in expected)


def test_all_81_offsets_are_drawn_about_equally_and_half_the_images_flipped():
    n = 40_500  # 500 per offset expected
    offsets, flips = draw(n, torch.Generator().manual_seed(0))
    counts = torch.bincount(offsets[:, 0] * 9 + offsets[:, 1], minlength=81)
    assert offsets.min() == 0 and offsets.max() == 2 * PADDING and len(counts) == 81
    assert counts.min() > 400 and counts.max() < 600  # ±20%: 4.5 standard deviations of a count of ~500
    assert abs(flips.float().mean().item() - 0.5) < 0.01  # 4 standard deviations


def test_draws_are_on_the_cpu_generator_whatever_the_device():
    offsets, flips = draw(4, torch.Generator().manual_seed(0))
    assert offsets.device.type == flips.device.type == "cpu"
    assert offsets.dtype == torch.int64 and flips.dtype == torch.bool


def test_a_short_last_batch_and_an_empty_one():
    g = torch.Generator().manual_seed(0)
    assert random_crop_flip(batch(1), g).shape == (1, 3, 32, 32)
    assert random_crop_flip(batch(0), g).shape == (0, 3, 32, 32)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_get_the_same_crops_and_flips_as_cpu_ones():
    images = batch()
    on_gpu = random_crop_flip(images.cuda(), torch.Generator().manual_seed(5))
    assert on_gpu.device.type == "cuda" and on_gpu.dtype == torch.uint8
    assert torch.equal(on_gpu.cpu(), random_crop_flip(images, torch.Generator().manual_seed(5)))
