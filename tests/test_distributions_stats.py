"""Statistical tests of the synthetic workload: every length distribution and arrival process
draws from the distribution its configuration names.

Each test draws a large sample from a fixed seed (so the suite is deterministic) and applies a
test whose false-positive rate for a correct sampler on a fresh seed is at most ALPHA = 1e-3
(KS and chi-square p-values, or |z| <= 4 for moment tests, two-sided 6e-5). The power against
the plausible bug each test is aimed at is stated where it is computed; all are ~1.

Integer lengths are compared with continuous distributions by adding an independent
uniform(-1/2, 1/2) jitter: rint(Y) + U has Y's CDF at every half-integer, and between them
differs from it by at most half a bin's probability (< 1e-3 here, far under the KS bounds).
The reference CDFs are written out from their definitions (``math.erf``) where short.
"""

import math

import numpy as np
import pytest
from scipy import stats

from sim.config import Config
from sim.workload import RequestFactory, arrival_times, parse_length

ALPHA = 1e-3
Z_MAX = 4.0
N = 40_000


def _phi(z: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def _jitter(x: np.ndarray, seed: int = 99) -> np.ndarray:
    return x + np.random.default_rng(seed).uniform(-0.5, 0.5, size=len(x))


def _draw(spec, n=N, seed=0) -> np.ndarray:
    return parse_length(spec, "workload.prompt_tokens").sample(np.random.default_rng(seed), n)


def _z_mean(x: np.ndarray, mean: float, sd: float) -> float:
    return (x.mean() - mean) / (sd / math.sqrt(len(x)))


# ---- lengths ------------------------------------------------------------------------------------


def test_uniform_lengths_hit_every_value_of_the_closed_range_equally():
    x = _draw({"dist": "uniform", "low": 10, "high": 20})
    assert x.min() == 10 and x.max() == 20  # both ends included
    counts = np.bincount(x - 10, minlength=11)
    # chi-square, 10 d.o.f.: an exclusive ``high`` (no 20s) gives chi2 ~ N / 10 = 4000
    assert stats.chisquare(counts).pvalue > ALPHA
    sd = math.sqrt((11**2 - 1) / 12)  # discrete uniform on 11 values
    assert abs(_z_mean(x, 15.0, sd)) <= Z_MAX


@pytest.mark.parametrize("sigma", [0.5, 1.0])
def test_lognormal_lengths_have_the_configured_mean_and_log_spread(sigma):
    """``mean`` is the mean of the lengths (not of their log), ``sigma`` the log's spread:
    Y = exp(mu + sigma Z) with mu = ln(mean) - sigma^2 / 2, so that E[Y] = mean."""
    mean = 500.0
    x = _draw({"dist": "lognormal", "mean": mean, "sigma": sigma})
    # moment test. sd of a lognormal: mean sqrt(e^(sigma^2) - 1) (656 for sigma = 1, so the
    # mean's standard error is 3.3). Without the correction the mean is e^(sigma^2/2) too
    # large: 824 (sigma = 1) or 567 (sigma = 0.5), z = 100 and 40.
    sd = mean * math.sqrt(math.exp(sigma**2) - 1)
    assert abs(_z_mean(x, mean, sd)) <= Z_MAX
    # the median is e^mu = mean e^(-sigma^2/2): 303.3 for sigma = 1, 441.2 for 0.5
    median = mean * math.exp(-(sigma**2) / 2)
    below = (x < median).mean() + 0.5 * (x == round(median)).mean()  # ties split
    assert abs(below - 0.5) <= Z_MAX * 0.5 / math.sqrt(N)
    # KS of the whole shape (the clip at 1 token holds P < 1e-9 here)
    mu = math.log(mean) - sigma**2 / 2
    ks = stats.kstest(_jitter(x), lambda y: stats.norm.cdf((np.log(np.maximum(y, 1e-300))
                                                            - mu) / sigma))
    assert ks.pvalue > ALPHA, ks


def test_lognormal_clipped_at_max_puts_the_tail_mass_on_max():
    """P(rint(Y) >= 2000) = P(Y > 1999.5) = 1 - Phi((ln 1999.5 - mu) / sigma), by hand 0.0296."""
    x = _draw({"dist": "lognormal", "mean": 500, "sigma": 1.0, "max": 2000})
    mu = math.log(500) - 0.5
    p = 1 - _phi((math.log(1999.5) - mu) / 1.0)
    assert p == pytest.approx(0.0296, abs=5e-4)
    assert x.max() == 2000
    assert abs((x == 2000).mean() - p) <= Z_MAX * math.sqrt(p * (1 - p) / N)


def test_normal_lengths_have_the_configured_mean_and_sd_and_clip_at_min():
    x = _draw({"dist": "normal", "mean": 300, "sigma": 50})
    assert abs(_z_mean(x, 300, 50)) <= Z_MAX
    ks = stats.kstest(_jitter(x), lambda y: stats.norm.cdf(y, 300, 50))
    assert ks.pvalue > ALPHA, ks
    # clipped: mean 100, sigma 100, min 1. P(rint(Y) <= 1) = Phi((1.5 - 100) / 100) = 0.1623
    y = _draw({"dist": "normal", "mean": 100, "sigma": 100, "min": 1}, seed=1)
    p = _phi((1.5 - 100) / 100)
    assert p == pytest.approx(0.1623, abs=1e-4)
    assert y.min() == 1 and abs((y == 1).mean() - p) <= Z_MAX * math.sqrt(p * (1 - p) / N)


@pytest.mark.parametrize("weights", [None, (1.0, 2.0, 7.0)])
def test_empirical_lengths_resample_the_values_with_their_weights(weights):
    spec = {"dist": "empirical", "values": [10, 20, 30]}
    if weights:
        spec["weights"] = list(weights)
    x = _draw(spec)
    assert set(np.unique(x)) == {10, 20, 30}
    observed = [(x == v).sum() for v in (10, 20, 30)]
    probs = np.array(weights or (1, 1, 1), dtype=float)
    probs /= probs.sum()
    assert stats.chisquare(observed, probs * N).pvalue > ALPHA  # 2 d.o.f.


def test_config_lengths_reach_the_request_factory_unchanged():
    """Through the config and the factory sim.simulate uses: prompts and outputs from their
    own distributions (each a moment test)."""
    cfg = Config.model_validate({"workload": {
        "prompt_tokens": {"dist": "lognormal", "mean": 800, "sigma": 0.7},
        "output_tokens": {"dist": "uniform", "low": 1, "high": 99}}})
    factory = RequestFactory(*cfg.workload.lengths(), seed=4)
    reqs = [factory.make(0.0) for _ in range(20_000)]
    prompts = np.array([r.prompt_tokens for r in reqs], dtype=float)
    outputs = np.array([r.output_tokens for r in reqs], dtype=float)
    assert abs(_z_mean(prompts, 800, 800 * math.sqrt(math.exp(0.49) - 1))) <= Z_MAX
    assert abs(_z_mean(outputs, 50, math.sqrt((99**2 - 1) / 12))) <= Z_MAX
    assert abs(np.corrcoef(prompts, outputs)[0, 1]) <= Z_MAX / math.sqrt(20_000)  # independent


# ---- arrivals -----------------------------------------------------------------------------------


def _gaps(kind: str, rate: float, cv: float, n: int = N, seed: int = 0) -> np.ndarray:
    times = arrival_times(kind, rate, cv, np.random.default_rng(seed))
    t = np.fromiter((next(times) for _ in range(n)), dtype=np.float64, count=n)
    return np.diff(t, prepend=0.0)


def test_poisson_arrivals_have_exponential_gaps_at_the_configured_rate():
    rate = 7.5
    gaps = _gaps("poisson", rate, 1.0)
    assert abs(_z_mean(gaps, 1 / rate, 1 / rate)) <= Z_MAX  # exponential: sd = mean
    ks = stats.kstest(gaps, lambda g: 1 - np.exp(-rate * g))
    assert ks.pvalue > ALPHA, ks
    # counts in 1 s windows: Poisson(7.5), variance / mean = 1 (se ~ sqrt(2 / windows))
    counts = np.bincount(np.cumsum(gaps).astype(int))[:-1]
    assert abs(counts.var() / counts.mean() - 1) <= Z_MAX * math.sqrt(2 / len(counts))


@pytest.mark.parametrize("cv", [0.5, 2.0])
def test_gamma_arrivals_have_the_configured_rate_and_cv(cv):
    """Gamma gaps of mean 1/rate and coefficient of variation cv: shape 1/cv^2. A sampler
    ignoring cv (exponential gaps, cv 1) is 50 % (cv 2) or 100 % (cv 0.5) off; the sample cv's
    relative standard error at N = 40,000 is 0.4 % (cv 0.5) and 0.8 % (cv 2) (measured over
    300 seeds), so the 8 % bound is > 10 standard errors and a cv-blind sampler fails it with
    power ~1."""
    rate = 4.0
    gaps = _gaps("gamma", rate, cv, seed=3)
    assert abs(_z_mean(gaps, 1 / rate, cv / rate)) <= Z_MAX
    assert gaps.std() / gaps.mean() == pytest.approx(cv, rel=0.08)
    shape = 1 / cv**2
    ks = stats.kstest(gaps, stats.gamma(shape, scale=1 / (rate * shape)).cdf)
    assert ks.pvalue > ALPHA, ks
    exponential = stats.kstest(gaps, lambda g: 1 - np.exp(-rate * g))
    assert exponential.pvalue < ALPHA  # and it is not Poisson


def test_gamma_with_cv_one_is_poisson():
    gaps = _gaps("gamma", 3.0, 1.0, seed=5)
    assert stats.kstest(gaps, lambda g: 1 - np.exp(-3.0 * g)).pvalue > ALPHA



@pytest.mark.parametrize(("spec", "sd"), [
    ({"dist": "fixed", "value": 77}, 0.0),
    ({"dist": "uniform", "low": 5, "high": 95}, math.sqrt((91**2 - 1) / 12)),
    ({"dist": "lognormal", "mean": 300, "sigma": 0.6}, 300 * math.sqrt(math.exp(0.36) - 1)),
    ({"dist": "normal", "mean": 400, "sigma": 60}, 60.0),
    ({"dist": "empirical", "values": [10, 20, 30], "weights": [1, 2, 7]},
     math.sqrt(0.1 * 100 + 0.2 * 400 + 0.7 * 900 - 26**2)),  # mean 26 by hand
])
def test_expected_length_is_the_mean_of_the_draws(spec, sd):
    """``expected()`` (used for load estimates) agrees with what ``sample`` draws, where no
    clipping applies: a moment test, |z| <= 4."""
    dist = parse_length(spec, "workload.prompt_tokens")
    x = dist.sample(np.random.default_rng(21), N)
    if sd == 0.0:
        assert (x == dist.expected()).all()
    else:
        assert abs(_z_mean(x, dist.expected(), sd)) <= Z_MAX
    if spec["dist"] == "empirical":
        assert dist.expected() == pytest.approx(26.0)


@pytest.mark.parametrize("spec, missing", [
    ({"dist": "uniform", "min": 16, "max": 512}, "low, high"),
    ({"dist": "fixed", "min": 8}, "value"),
    ({"dist": "lognormal", "mean": 300}, "sigma"),
])
def test_a_distribution_without_its_parameters_is_refused_not_drawn_as_one_length(spec, missing):
    """``min``/``max`` only clip: a uniform given them alone once drew every length = min
    (three realexec test configs did this and served constant lengths)."""
    from sim.workload import WorkloadError, parse_length

    with pytest.raises(WorkloadError) as err:
        parse_length(spec, "workload.prompt_tokens")
    assert str(err.value).startswith(f"workload.prompt_tokens: {spec['dist']} needs")
    assert f"(missing {missing};" in str(err.value) and "\n" not in str(err.value)
