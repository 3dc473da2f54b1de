"""Multi-scale deformable attention against a slow reference with explicit bilinear loops:
values, gradients (gradcheck in float64), points outside the maps; and the module around it."""

import math

import pytest
import torch

from corrloss_d2.layers import MultiScaleDeformableAttention, multi_scale_deformable_attention


def reference(value, spatial_shapes, sampling_locations, attention_weights):
    """One query, head, level and point at a time: the location in pixels is x·W − 0.5 (pixel
    centres at (i + 0.5) / W), the four neighbours weighted bilinearly, zero outside the map."""
    batch, _, heads, channels = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    starts = [0]
    for height, width in spatial_shapes.tolist():
        starts.append(starts[-1] + height * width)
    out = torch.zeros(batch, queries, heads * channels, dtype=value.dtype)
    for n in range(batch):
        for q in range(queries):
            for m in range(heads):
                total = torch.zeros(channels, dtype=value.dtype)
                for level, (height, width) in enumerate(spatial_shapes.tolist()):
                    for p in range(points):
                        x = float(sampling_locations[n, q, m, level, p, 0]) * width - 0.5
                        y = float(sampling_locations[n, q, m, level, p, 1]) * height - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        sample = torch.zeros(channels, dtype=value.dtype)
                        for xi, yi in ((x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)):
                            if 0 <= xi < width and 0 <= yi < height:
                                weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
                                sample += weight * value[n, starts[level] + yi * width + xi, m]
                        total += attention_weights[n, q, m, level, p] * sample
                out[n, q, m * channels : (m + 1) * channels] = total
    return out


def random_inputs(seed, dtype=torch.float32, spread=(-0.2, 1.2)):
    gen = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[6, 5], [3, 4], [2, 2], [1, 1]])
    batch, heads, channels, queries, points = 2, 3, 4, 5, 2
    value = torch.randn(batch, int(shapes.prod(1).sum()), heads, channels, generator=gen)
    low, high = spread
    locations = low + (high - low) * torch.rand(
        batch, queries, heads, len(shapes), points, 2, generator=gen
    )
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=gen)
    return value.to(dtype), shapes, locations.to(dtype), weights.to(dtype)


@pytest.mark.parametrize("seed", range(3))
def test_values_equal_the_bilinear_loop_reference(seed):
    value, shapes, locations, weights = random_inputs(seed, torch.float64)
    assert ((locations < 0) | (locations > 1)).any(), "some points must lie outside the maps"
    ours = multi_scale_deformable_attention(value, shapes, locations, weights)
    assert ours.shape == (2, 5, 3 * 4)
    torch.testing.assert_close(ours, reference(value, shapes, locations, weights))


def test_points_outside_every_map_sample_zeros_and_pixel_centres_sample_the_pixel():
    value, shapes, locations, weights = random_inputs(0)
    far = torch.full_like(locations, 3.0)
    assert multi_scale_deformable_attention(value, shapes, far, weights).abs().max() == 0
    # Point at pixel (x=2, y=1)'s centre of the first level, weight 1, nothing else.
    height, width = shapes[0].tolist()
    locations = torch.full_like(locations, -5.0)
    locations[..., 0, 0, 0] = (2 + 0.5) / width
    locations[..., 0, 0, 1] = (1 + 0.5) / height
    out = multi_scale_deformable_attention(value, shapes, locations, torch.ones_like(weights))
    expected = value[:, 1 * width + 2].reshape(2, -1)  # (N, M·D)
    torch.testing.assert_close(out, expected[:, None].expand_as(out))


def test_gradients_pass_gradcheck_in_float64():
    value, shapes, locations, weights = random_inputs(1, torch.float64, spread=(0.05, 0.95))
    value, locations, weights = (
        value[:1].clone(),
        locations[:1, :2].clone(),
        weights[:1, :2].clone(),
    )
    inputs = [t.requires_grad_() for t in (value, locations, weights)]
    assert torch.autograd.gradcheck(
        lambda v, loc, w: multi_scale_deformable_attention(v, shapes, loc, w), inputs
    )


def test_wrong_shapes_are_named():
    value, shapes, locations, weights = random_inputs(0)
    with pytest.raises(ValueError, match="cover 47 positions, but value has S = 46"):
        multi_scale_deformable_attention(value[:, :46], shapes, locations, weights)
    with pytest.raises(ValueError, match=r"attention_weights must be \(2, 5, 3, 4, 2\)"):
        multi_scale_deformable_attention(value, shapes, locations, weights[..., :1])


def test_module_with_point_and_box_references_and_padding():
    torch.manual_seed(0)
    attention = MultiScaleDeformableAttention(embed_dim=16, num_heads=4, num_levels=2, num_points=3)
    shapes = torch.tensor([[4, 6], [2, 3]])
    value = torch.randn(2, 30, 16)
    query = torch.randn(2, 7, 16)
    points = torch.rand(2, 7, 2, 2)
    boxes = torch.cat([torch.rand(2, 7, 2, 2), 0.1 + 0.3 * torch.rand(2, 7, 2, 2)], dim=-1)
    for references in (points, boxes):
        out = attention(query, references, value, shapes)
        assert out.shape == (2, 7, 16) and torch.isfinite(out).all()
    # Initially every head's weights are uniform and its points spread in its own direction.
    offsets = attention.sampling_offsets.bias.view(4, 2, 3, 2)
    assert torch.equal(offsets[:, 0], offsets[:, 1]) and (offsets.abs().amax(-1) > 0).all()
    # Padded positions contribute nothing: changing their values changes no output.
    padding = torch.zeros(2, 30, dtype=torch.bool)
    padding[:, 20:24] = True
    changed = value.clone()
    changed[:, 20:24] += 100
    torch.testing.assert_close(
        attention(query, points, value, shapes, padding),
        attention(query, points, changed, shapes, padding),
    )
    out = attention(query, points, value, shapes)
    out.sum().backward()
    assert all(p.grad is not None for p in attention.parameters())
