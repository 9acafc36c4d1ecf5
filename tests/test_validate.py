"""Parity metrics: cosine, max-abs/rel, top-1, the near-zero escape, would-pass bounds, divergence."""
import numpy as np
import pytest

from edgesdk.errors import EdgeSDKError
from edgesdk.device.compare import Tolerance, compare, cosine, first_divergence, tolerance_for

rng = np.random.default_rng(0)


def samples(n=5, shape=(1, 1000)):
    out = []
    for i in range(n):
        x = rng.standard_normal(shape).astype(np.float32)
        x[0, (37 * i) % shape[1]] += 6.0  # a clear winner, as a confident classifier gives
        out.append({"logits": x})
    return out


def test_identical_passes_fp32():
    refs = samples()
    r = compare(refs, [dict(x) for x in refs], "fp32")
    assert r.passed and r.cosine_min == pytest.approx(1.0) and r.max_abs == 0 and r.top1_agreement == 1.0


def test_fp16_noise_passes_fp16_not_fp32():
    refs = samples()
    gots = [{"logits": x["logits"].astype(np.float16).astype(np.float32) + 2e-2 * rng.standard_normal((1, 1000)).astype(np.float32)} for x in refs]
    assert compare(refs, gots, "fp16").passed
    r = compare(refs, gots, "fp32")
    assert not r.passed
    w = r.would_pass()
    assert w["min_cosine"] < 0.9999 and w["atol"] == pytest.approx(r.max_abs)
    assert "would pass with" in r.summary()


def test_near_zero_output_passes_by_atol_not_cosine():
    # e.g. OCR probabilities on an image without text: cosine is noise, max-abs tells the truth
    refs = [{"prob": np.full((1, 1, 8, 8), 1e-7, np.float32)}]
    gots = [{"prob": np.abs(rng.standard_normal((1, 1, 8, 8))).astype(np.float32) * 1e-6}]
    r = compare(refs, gots, "fp32")
    assert r.outputs[0].cosine_min < 0.99 and r.passed


def test_top1_disagreement_fails_even_with_high_cosine():
    ref = np.zeros((1, 10), np.float32)
    ref[0, 3], ref[0, 4] = 10.0, 9.9999
    got = ref.copy()
    got[0, 3], got[0, 4] = 9.9999, 10.0
    r = compare([{"y": ref}], [{"y": got}], "fp32", Tolerance(min_cosine=0.999, atol=0.0))
    assert r.outputs[0].cosine_min > 0.9999 and r.top1_agreement == 0.0 and not r.passed


def test_errors_name_the_problem():
    with pytest.raises(EdgeSDKError, match="shape"):
        compare([{"y": np.zeros((1, 3))}], [{"y": np.zeros((1, 4))}], "fp32")
    with pytest.raises(EdgeSDKError, match="lacks outputs"):
        compare([{"y": np.zeros((1, 3))}], [{"z": np.zeros((1, 3))}], "fp32")
    with pytest.raises(EdgeSDKError, match="precision"):
        tolerance_for("fp8")


def test_nan_output_fails():
    refs = samples(1)
    gots = [{"logits": np.full((1, 1000), np.nan, np.float32)}]
    assert not compare(refs, gots, "fp16").passed


def test_first_divergence_in_order():
    a = rng.standard_normal(100)
    ref = {"t1": a, "t2": a * 2, "t3": a * 3}
    got = {"t1": a, "t2": a * 2 + rng.standard_normal(100), "t3": -a}
    order = [("t1", "n1", "Conv"), ("t2", "n2", "Relu"), ("t3", "n3", "Add")]
    d = first_divergence(order, ref, got, tolerance_for("fp32"))
    assert d["tensor"] == "t2" and d["op_type"] == "Relu"
    assert first_divergence(order, ref, dict(ref), tolerance_for("fp32")) is None


def test_cosine_edges():
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine(np.zeros(3), np.ones(3)) == 0.0


def test_budget_check_names_the_fp32_gap_of_each_top1_flip():
    """The budget report says how close fp32 itself was on every image whose class changed."""
    from edgesdk.build.quantize import Budget, check_budget

    refs = [{"logits": np.array([[2.0, 1.99, 0.0]])}, {"logits": np.array([[3.0, 0.0, 1.0]])},
            {"logits": np.array([[0.0, 0.5, 4.0]])}]
    gots = [{"logits": np.array([[1.98, 2.0, 0.0]])}, {"logits": np.array([[3.0, 0.1, 1.0]])},
            {"logits": np.array([[3.0, 0.5, 2.0]])}]
    # Top-1 counts the photos fp32 decides (the first, 2.0 vs 1.99, is a near-tie): 1 flip of 2; every
    # flip's fp32 gap is still named.
    check = check_budget(refs, gots, Budget(max_top1_drop=0.4))
    assert check.top1_drop == pytest.approx(1 / 2) and check.decided == 2 and not check.passed
    assert check.flip_gaps == [0.01, 4.0]
    assert "1 of 2 decided photos" in check.describe() and "fp32 gaps of the flips: 0.01, 4" in check.describe()
    assert check_budget(refs, gots, Budget(max_top1_drop=0.5)).passed
    assert check_budget(refs[1:2], gots[1:2], Budget(max_top1_drop=0.0)).flip_gaps == []
