import numpy as np
import pytest

from modelfleet.bench.popularity import cdf, probabilities, sample
from modelfleet.bench.spec import Popularity


def test_uniform_is_flat() -> None:
    p = probabilities(4, Popularity.UNIFORM)
    assert p.tolist() == [0.25] * 4


def test_zipf_weights_follow_rank_power() -> None:
    p = probabilities(10, Popularity.ZIPF, zipf_s=1.1)
    assert p.sum() == pytest.approx(1.0)
    for k in range(1, 11):
        assert p[0] / p[k - 1] == pytest.approx(k**1.1)


def test_cdf_is_increasing_and_ends_at_one() -> None:
    c = cdf(3000, Popularity.ZIPF, 1.1)
    assert np.all(np.diff(c) > 0)
    assert c[-1] == 1.0


def test_zipf_sample_matches_distribution() -> None:
    rng = np.random.default_rng(1)
    drawn = sample(cdf(10, Popularity.ZIPF, 1.1), 200_000, rng)
    freq = np.bincount(drawn, minlength=10) / len(drawn)
    np.testing.assert_allclose(freq, probabilities(10, Popularity.ZIPF, 1.1), atol=0.005)


def test_uniform_sample_covers_every_model() -> None:
    drawn = sample(cdf(5, Popularity.UNIFORM), 50_000, np.random.default_rng(2))
    freq = np.bincount(drawn, minlength=5) / len(drawn)
    np.testing.assert_allclose(freq, 0.2, atol=0.01)


def test_sample_stays_in_range_at_the_top_of_the_unit_interval() -> None:
    class TopRng:
        def random(self, size: int) -> np.ndarray:
            return np.full(size, np.nextafter(1.0, 0.0))

    drawn = sample(cdf(7, Popularity.ZIPF, 2.0), 3, TopRng())  # type: ignore[arg-type]
    assert drawn.tolist() == [6, 6, 6]


def test_single_model() -> None:
    assert sample(cdf(1, Popularity.ZIPF), 5, np.random.default_rng(0)).tolist() == [0] * 5


def test_no_models_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one model"):
        probabilities(0, Popularity.UNIFORM)
