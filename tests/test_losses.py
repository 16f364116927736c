"""The losses against their closed forms: hand-written loops over the paper's equations, in float64."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from imascl_ray.losses import (
    imascl_loss,
    local_imascl_loss,
    monolingual_loss,
    mse_distillation_loss,
    soft_contrastive_loss,
    soft_labels,
)

TAU = 0.1


def _cos(u: list[float], v: list[float]) -> float:
    dot = sum(a * b for a, b in zip(u, v, strict=True))
    return dot / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def _softmax_row(values: list[float]) -> list[float]:
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


# A 3 x 3 example: three translation pairs, 3-d student and teacher embeddings, deliberately not unit-norm.
SRC = [[1.0, 0.2, -0.3], [0.1, 1.5, 0.4], [-0.6, 0.3, 0.9]]
TGT = [[0.8, 0.1, -0.1], [0.3, 1.1, 0.2], [-0.2, 0.6, 1.2]]
TEACHER_SRC = [[2.0, 0.5, 0.1], [0.4, 1.8, -0.2], [0.3, 0.2, 1.1]]
TEACHER_TGT = [[1.5, 0.9, -0.4], [0.2, 2.2, 0.3], [-0.1, 0.4, 0.7]]


def hand_priority(teacher: list[list[float]], tau: float) -> list[list[float]]:
    """Eq. 4: w(i, j) = exp(sim_g(s_i, s_j)) / sum_n exp(sim_g(s_i, s_n))."""
    return [_softmax_row([_cos(a, b) / tau for b in teacher]) for a in teacher]


def hand_average(teacher_s: list[list[float]], teacher_t: list[list[float]], tau: float) -> list[list[float]]:
    """Eq. 5: the softmax of (sim_g(s_i, s_j) + sim_g(t_i, t_j)) / 2."""
    n = len(teacher_s)
    return [
        _softmax_row(
            [
                (_cos(teacher_s[i], teacher_s[j]) + _cos(teacher_t[i], teacher_t[j])) / (2 * tau)
                for j in range(n)
            ]
        )
        for i in range(n)
    ]


def hand_row_loss(s, t, w, tau):
    """Eq. 2."""
    n = len(s)
    total = 0.0
    for i in range(n):
        denominator = sum(math.exp(_cos(s[i], t[m]) / tau) for m in range(n))
        for j in range(n):
            total += w[i][j] * math.log(math.exp(_cos(s[i], t[j]) / tau) / denominator)
    return -total / n


def hand_col_loss(s, t, w, tau):
    """Eq. 6's L_col: the softmax runs over the sources for each target t_j."""
    n = len(s)
    total = 0.0
    for i in range(n):
        for j in range(n):
            denominator = sum(math.exp(_cos(s[m], t[j]) / tau) for m in range(n))
            total += w[i][j] * math.log(math.exp(_cos(s[i], t[j]) / tau) / denominator)
    return -total / n


def hand_mono_loss(s, t, w, tau):
    """Eq. 7: the same labels on sim(s, s) and sim(t, t), normalised over the first index (columns)."""
    n = len(s)
    total = 0.0
    for x in (s, t):
        for i in range(n):
            for j in range(n):
                denominator = sum(math.exp(_cos(x[m], x[j]) / tau) for m in range(n))
                total += w[i][j] * math.log(math.exp(_cos(x[i], x[j]) / tau) / denominator)
    return -total / n


def t64(rows: list[list[float]], grad: bool = False) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize("kind", ["priority", "average"])
def test_soft_labels_match_the_equations(kind):
    if kind == "priority":
        expected = hand_priority(TEACHER_SRC, TAU)
        labels = soft_labels(t64(TEACHER_SRC), kind="priority", tau=TAU)
    else:
        expected = hand_average(TEACHER_SRC, TEACHER_TGT, TAU)
        labels = soft_labels(t64(TEACHER_SRC), t64(TEACHER_TGT), kind="average", tau=TAU)
    torch.testing.assert_close(labels, t64(expected), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(labels.sum(dim=1), torch.ones(3, dtype=torch.float64))
    assert not torch.allclose(labels, torch.eye(3, dtype=torch.float64)), "a soft label is not the identity"


def test_priority_labels_use_only_the_anchor_side():
    anchor = t64(TEACHER_SRC)
    assert torch.equal(
        soft_labels(anchor, t64(TEACHER_TGT), kind="priority", tau=TAU),
        soft_labels(anchor, kind="priority", tau=TAU),
    )


def test_hard_labels_are_the_identity():
    torch.testing.assert_close(
        soft_labels(t64(TEACHER_SRC), kind="hard", tau=TAU), torch.eye(3, dtype=torch.float64)
    )


@pytest.mark.parametrize("kind", ["priority", "average"])
def test_cross_mono_and_tms_losses_match_the_equations(kind):
    w = hand_priority(TEACHER_SRC, TAU) if kind == "priority" else hand_average(TEACHER_SRC, TEACHER_TGT, TAU)
    labels = t64(w)
    row, col = hand_row_loss(SRC, TGT, w, TAU), hand_col_loss(SRC, TGT, w, TAU)
    mono = hand_mono_loss(SRC, TGT, w, TAU)

    assert soft_contrastive_loss(t64(SRC), t64(TGT), labels, tau=TAU).item() == pytest.approx(
        row + col, rel=1e-12
    )
    assert monolingual_loss(t64(SRC), t64(TGT), labels, tau=TAU).item() == pytest.approx(mono, rel=1e-12)
    assert imascl_loss(t64(SRC), t64(TGT), labels, tau=TAU).item() == pytest.approx(row + col, rel=1e-12)
    lam = 0.1
    assert imascl_loss(t64(SRC), t64(TGT), labels, tau=TAU, lam=lam).item() == pytest.approx(
        lam * (row + col) + mono, rel=1e-12
    )


def test_mse_distillation_matches_its_closed_form():
    expected = (
        sum(
            (SRC[i][k] - TEACHER_SRC[i][k]) ** 2 + (TGT[i][k] - TEACHER_SRC[i][k]) ** 2
            for i in range(3)
            for k in range(3)
        )
        / 9
    )
    assert mse_distillation_loss(t64(SRC), t64(TGT), t64(TEACHER_SRC)).item() == pytest.approx(
        expected, rel=1e-12
    )


def test_hard_labels_give_symmetric_infonce():
    torch.manual_seed(0)
    src, tgt = torch.randn(8, 16), torch.randn(8, 16)
    similarity = F.normalize(src, dim=1) @ F.normalize(tgt, dim=1).T
    target = torch.arange(8)
    expected = F.cross_entropy(similarity / TAU, target) + F.cross_entropy(similarity.T / TAU, target)
    loss = soft_contrastive_loss(src, tgt, soft_labels(src, kind="hard", tau=TAU), tau=TAU)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def test_margin_is_subtracted_from_the_translation_cosine_only():
    torch.manual_seed(1)
    src, tgt, margin = torch.randn(6, 8), torch.randn(6, 8), 0.3
    similarity = F.normalize(src, dim=1) @ F.normalize(tgt, dim=1).T - margin * torch.eye(6)
    target = torch.arange(6)
    expected = F.cross_entropy(similarity / TAU, target) + F.cross_entropy(similarity.T / TAU, target)
    loss = soft_contrastive_loss(src, tgt, torch.eye(6), tau=TAU, margin=margin)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def test_hard_negatives_join_the_row_softmax_with_label_zero():
    """mUSE's translation ranking with hard negatives: rows over [targets; negatives], columns as before."""
    torch.manual_seed(5)
    src, tgt, negatives = torch.randn(5, 8), torch.randn(5, 8), torch.randn(10, 8)
    unit = [F.normalize(x, dim=1) for x in (src, tgt, negatives)]
    rows = torch.cat([unit[0] @ unit[1].T, unit[0] @ unit[2].T], dim=1)
    target = torch.arange(5)
    expected = F.cross_entropy(rows / TAU, target) + F.cross_entropy((unit[0] @ unit[1].T).T / TAU, target)
    loss = soft_contrastive_loss(src, tgt, torch.eye(5), tau=TAU, negatives=negatives)
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def test_gradients_pass_gradcheck_in_float64():
    labels = soft_labels(t64(TEACHER_SRC), t64(TEACHER_TGT), kind="average", tau=TAU)
    src, tgt, teacher = t64(SRC, grad=True), t64(TGT, grad=True), t64(TEACHER_SRC, grad=True)
    for loss in (
        lambda s, t: soft_contrastive_loss(s, t, labels, tau=TAU),
        lambda s, t: soft_contrastive_loss(s, t, labels, tau=TAU, margin=0.2),
        lambda s, t: monolingual_loss(s, t, labels, tau=TAU),
        lambda s, t: imascl_loss(s, t, labels, tau=TAU, lam=0.1),
        lambda s, t: mse_distillation_loss(s, t, t64(TEACHER_SRC)),
    ):
        assert torch.autograd.gradcheck(loss, (src, tgt))
    negatives = t64(TEACHER_TGT, grad=True)  # zero-label columns: label rows then sum to 1 over fewer keys
    assert torch.autograd.gradcheck(
        lambda s, t, m: soft_contrastive_loss(s, t, labels, tau=TAU, negatives=m), (src, tgt, negatives)
    )
    assert torch.autograd.gradcheck(lambda g: soft_labels(g, kind="priority", tau=TAU), (teacher,))


def test_the_loss_keeps_one_matrix_per_term_for_backward_and_never_the_labels():
    """Large global batches rely on it: TMS saves 4 ``[N, N]`` blocks (rows, columns, 2 monolingual terms),
    not 4 log-probability blocks plus the labels that plain autograd would keep."""
    torch.manual_seed(0)
    n = 16
    src, tgt = torch.randn(n, 8, requires_grad=True), torch.randn(n, 8, requires_grad=True)
    labels = soft_labels(torch.randn(n, 5), kind="priority", tau=0.05)
    saved: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = imascl_loss(src, tgt, labels, tau=TAU, lam=0.1)
    storages = {tensor.untyped_storage().data_ptr() for tensor in saved if tensor.shape == (n, n)}
    assert len(storages) == 4
    assert labels.untyped_storage().data_ptr() not in storages
    loss.backward()  # and the saved blocks are all backward needs
    assert src.grad is not None and tgt.grad is not None


@pytest.mark.parametrize("lam", [None, 0.1])
@pytest.mark.parametrize("kind", ["hard", "priority", "average"])
def test_blocks_of_the_local_form_add_up_to_the_full_loss(kind, lam):
    torch.manual_seed(2)
    n, block, dim = 12, 4, 8
    src = torch.randn(n, dim, dtype=torch.float64, requires_grad=True)
    tgt = torch.randn(n, dim, dtype=torch.float64, requires_grad=True)
    teacher_s, teacher_t = torch.randn(n, 5, dtype=torch.float64), torch.randn(n, 5, dtype=torch.float64)
    labels = soft_labels(teacher_s, teacher_t, kind=kind, tau=0.05)

    negatives = torch.randn(6, dim, dtype=torch.float64, requires_grad=True)
    full = imascl_loss(src, tgt, labels, tau=TAU, lam=lam, margin=0.1, negatives=negatives)
    full_grads = torch.autograd.grad(full, (src, tgt, negatives))
    shares = sum(
        local_imascl_loss(
            src[o : o + block],
            tgt[o : o + block],
            src,
            tgt,
            labels[o : o + block],
            labels[:, o : o + block].T,
            offset=o,
            tau=TAU,
            lam=lam,
            margin=0.1,
            negatives_all=negatives,
        )
        for o in range(0, n, block)
    )
    torch.testing.assert_close(shares, full, rtol=1e-12, atol=1e-12)
    for got, expected in zip(torch.autograd.grad(shares, (src, tgt, negatives)), full_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_bf16_autocast_keeps_the_maths_in_float32():
    """Under bf16 autocast the loss of bf16 embeddings equals the float32 loss of the same values.

    A bf16 softmax over logits of magnitude 1/tau = 100 would be off by far more than 1e-5; the loss is
    also finite, and within 5 % of the float32 loss of the unrounded embeddings (the rounding of the
    embeddings themselves to bf16 is the only difference left).
    """
    torch.manual_seed(3)
    tau = 0.01
    projection = torch.nn.Linear(32, 16)
    inputs_s, inputs_t = torch.randn(32, 32), torch.randn(32, 32)
    teacher = torch.randn(32, 16)
    labels = soft_labels(teacher, kind="priority", tau=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        src, tgt = projection(inputs_s), projection(inputs_t)
        assert src.dtype == torch.bfloat16
        mixed = imascl_loss(src, tgt, labels, tau=tau, lam=0.1)
        mixed_labels = soft_labels(teacher.bfloat16(), kind="priority", tau=0.05)
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed)
    assert mixed_labels.dtype == torch.float32
    same_values = imascl_loss(src.float(), tgt.float(), labels, tau=tau, lam=0.1)
    torch.testing.assert_close(mixed, same_values, rtol=1e-5, atol=1e-5)
    exact = imascl_loss(projection(inputs_s), projection(inputs_t), labels, tau=tau, lam=0.1)
    assert mixed.item() == pytest.approx(exact.item(), rel=0.05)


def test_bad_shapes_and_settings_raise_clear_errors():
    src, tgt = torch.randn(4, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"labels \[N, N\]"):
        soft_contrastive_loss(src, tgt, torch.eye(3), tau=TAU)
    with pytest.raises(ValueError, match="tau must be positive"):
        soft_contrastive_loss(src, tgt, torch.eye(4), tau=0.0)
    with pytest.raises(ValueError, match="both languages"):
        soft_labels(src, kind="average", tau=TAU)
    with pytest.raises(ValueError, match="unknown label kind 'soft'"):
        soft_labels(src, kind="soft", tau=TAU)
    with pytest.raises(ValueError, match="one shape"):
        mse_distillation_loss(src, tgt, torch.randn(4, 6))
