"""The losses against their closed forms: hand-written loops over the paper's equations, in float64.

Every loss object is called as the training loop calls it, on :class:`LossInputs` (here one process
holding the whole batch); the 2-rank equivalents are in ``test_distributed.py``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from imascl_ray.config import LossConfig, load_config
from imascl_ray.errors import InputError
from imascl_ray.losses import (
    LOSSES,
    EmbeddingMSELoss,
    HardNegativesLoss,
    InfoNCELoss,
    LossInputs,
    SoftContrastiveLoss,
    build_loss,
    contrastive_sums,
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


def hand_label_statistics(w):
    """Mean row entropy ``-sum_j w_ij log w_ij`` and mean diagonal mass ``w_ii``."""
    n = len(w)
    entropy = -sum(w[i][j] * math.log(w[i][j]) for i in range(n) for j in range(n)) / n
    return entropy, sum(w[i][i] for i in range(n)) / n


def single(src=SRC, tgt=TGT, anchor=TEACHER_SRC, other=TEACHER_TGT, negatives=None, grad=False):
    return LossInputs.single_process(
        t64(src, grad),
        t64(tgt, grad),
        t64(anchor) if anchor is not None else None,
        t64(other) if other is not None else None,
        negatives,
    )


@pytest.mark.parametrize("lam", [None, 0.1])
@pytest.mark.parametrize("kind", ["priority", "average"])
def test_the_soft_loss_and_its_terms_match_the_equations(kind, lam):
    w = hand_priority(TEACHER_SRC, TAU) if kind == "priority" else hand_average(TEACHER_SRC, TEACHER_TGT, TAU)
    cross = hand_row_loss(SRC, TGT, w, TAU) + hand_col_loss(SRC, TGT, w, TAU)
    mono = hand_mono_loss(SRC, TGT, w, TAU)
    entropy, diagonal = hand_label_statistics(w)

    output = SoftContrastiveLoss(kind, tau=TAU, lam=lam)(single())
    expected = cross if lam is None else lam * cross + mono
    assert output.value.item() == pytest.approx(expected, rel=1e-12)
    assert output.terms["cross"].item() == pytest.approx(cross, rel=1e-12)
    assert ("mono" in output.terms) == (lam is not None)
    if lam is not None:
        assert output.terms["mono"].item() == pytest.approx(mono, rel=1e-12)
    assert output.statistics["entropy"].item() == pytest.approx(entropy, rel=1e-12)
    assert output.statistics["diagonal"].item() == pytest.approx(diagonal, rel=1e-12)


def test_the_teacher_temperature_shapes_the_labels_only():
    sharp = SoftContrastiveLoss("priority", tau=TAU, teacher_tau=0.02)(single())
    w = hand_priority(TEACHER_SRC, 0.02)
    expected = hand_row_loss(SRC, TGT, w, TAU) + hand_col_loss(SRC, TGT, w, TAU)
    assert sharp.value.item() == pytest.approx(expected, rel=1e-12)


def test_priority_labels_ignore_the_other_side():
    with_other = SoftContrastiveLoss("priority", tau=TAU, lam=0.1)(single())
    without = SoftContrastiveLoss("priority", tau=TAU, lam=0.1)(single(other=None))
    assert torch.equal(with_other.value, without.value)


@pytest.mark.parametrize("lam", [None, 0.1])
def test_infonce_is_the_loss_of_identity_labels(lam):
    eye = [[float(i == j) for j in range(3)] for i in range(3)]
    cross = hand_row_loss(SRC, TGT, eye, TAU) + hand_col_loss(SRC, TGT, eye, TAU)
    expected = cross if lam is None else lam * cross + hand_mono_loss(SRC, TGT, eye, TAU)
    output = InfoNCELoss(tau=TAU, lam=lam)(single(anchor=None, other=None))  # no teacher needed
    assert output.value.item() == pytest.approx(expected, rel=1e-12)
    assert not output.statistics


def test_infonce_is_symmetric_cross_entropy():
    torch.manual_seed(0)
    src, tgt = torch.randn(8, 16), torch.randn(8, 16)
    similarity = F.normalize(src, dim=1) @ F.normalize(tgt, dim=1).T
    target = torch.arange(8)
    expected = F.cross_entropy(similarity / TAU, target) + F.cross_entropy(similarity.T / TAU, target)
    loss = InfoNCELoss(tau=TAU)(LossInputs.single_process(src, tgt)).value
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def test_the_mse_loss_regresses_both_sides_onto_the_anchor_teacher_embedding():
    expected = (
        sum(
            (SRC[i][k] - TEACHER_SRC[i][k]) ** 2 + (TGT[i][k] - TEACHER_SRC[i][k]) ** 2
            for i in range(3)
            for k in range(3)
        )
        / 9
    )
    output = EmbeddingMSELoss()(single())
    assert output.value.item() == pytest.approx(expected, rel=1e-12)
    assert (output.terms["mse_src"] + output.terms["mse_tgt"]).item() == pytest.approx(expected, rel=1e-12)


def test_margin_is_subtracted_from_the_translation_cosine_only():
    torch.manual_seed(1)
    src, tgt, margin = torch.randn(6, 8), torch.randn(6, 8), 0.3
    similarity = F.normalize(src, dim=1) @ F.normalize(tgt, dim=1).T - margin * torch.eye(6)
    target = torch.arange(6)
    expected = F.cross_entropy(similarity / TAU, target) + F.cross_entropy(similarity.T / TAU, target)
    loss = InfoNCELoss(tau=TAU, margin=margin)(LossInputs.single_process(src, tgt)).value
    torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-6)


def test_hard_negatives_join_the_row_softmax_with_label_zero():
    """mUSE's translation ranking with hard negatives: rows over [targets; negatives], columns as before."""
    torch.manual_seed(5)
    src, tgt, negatives = torch.randn(5, 8), torch.randn(5, 8), torch.randn(10, 8)
    unit = [F.normalize(x, dim=1) for x in (src, tgt, negatives)]
    rows = torch.cat([unit[0] @ unit[1].T, unit[0] @ unit[2].T], dim=1)
    target = torch.arange(5)
    expected = F.cross_entropy(rows / TAU, target) + F.cross_entropy((unit[0] @ unit[1].T).T / TAU, target)
    inputs = LossInputs.single_process(src, tgt, negatives=negatives)
    torch.testing.assert_close(HardNegativesLoss(tau=TAU)(inputs).value, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="needs the embeddings of mined hard negatives"):
        HardNegativesLoss(tau=TAU)(LossInputs.single_process(src, tgt))
    with pytest.raises(ValueError, match="takes no hard negatives"):
        InfoNCELoss(tau=TAU)(inputs)


def test_gradients_pass_gradcheck_in_float64():
    negatives = t64(TEACHER_TGT, grad=True)
    for loss in (
        SoftContrastiveLoss("average", tau=TAU),
        SoftContrastiveLoss("priority", tau=TAU, margin=0.2),
        SoftContrastiveLoss("average", tau=TAU, lam=0.1),
        SoftContrastiveLoss("priority", tau=TAU, lam=0.1, local=True),
        InfoNCELoss(tau=TAU, lam=0.1),
        EmbeddingMSELoss(),
    ):
        assert torch.autograd.gradcheck(
            lambda s, t, loss=loss: (
                loss(LossInputs.single_process(s, t, t64(TEACHER_SRC), t64(TEACHER_TGT))).value
            ),
            (t64(SRC, grad=True), t64(TGT, grad=True)),
        ), loss
    # zero-label columns: label rows then sum to 1 over fewer keys
    assert torch.autograd.gradcheck(
        lambda s, t, m: HardNegativesLoss(tau=TAU)(LossInputs.single_process(s, t, negatives=m)).value,
        (t64(SRC, grad=True), t64(TGT, grad=True), negatives),
    )
    teacher = t64(TEACHER_SRC, grad=True)
    assert torch.autograd.gradcheck(lambda g: soft_labels(g, kind="priority", tau=TAU), (teacher,))


def test_the_loss_keeps_one_matrix_per_term_for_backward_and_never_the_labels():
    """Large global batches rely on it: TMS saves 4 ``[N, N]`` blocks (rows, columns, 2 monolingual terms),
    not 4 log-probability blocks plus the labels that plain autograd would keep."""
    torch.manual_seed(0)
    n = 16
    src, tgt = torch.randn(n, 8, requires_grad=True), torch.randn(n, 8, requires_grad=True)
    teacher = torch.randn(n, 5)
    labels = soft_labels(teacher, kind="priority", tau=0.05)
    saved: list[torch.Tensor] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append(tensor)
        return tensor

    loss = SoftContrastiveLoss("priority", tau=TAU, teacher_tau=0.05, lam=0.1)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        value = loss(LossInputs.single_process(src, tgt, teacher)).value
    square = [tensor for tensor in saved if tensor.shape == (n, n)]
    assert len({tensor.untyped_storage().data_ptr() for tensor in square}) == 4
    assert not any(torch.allclose(tensor, labels) or torch.allclose(tensor, labels.T) for tensor in square)
    value.backward()  # and the saved blocks are all backward needs
    assert src.grad is not None and tgt.grad is not None


@pytest.mark.parametrize("monolingual", [False, True])
@pytest.mark.parametrize("kind", ["hard", "priority", "average"])
def test_blocks_of_the_local_form_add_up_to_the_whole_batch(kind, monolingual):
    torch.manual_seed(2)
    n, block, dim = 12, 4, 8
    src = torch.randn(n, dim, dtype=torch.float64, requires_grad=True)
    tgt = torch.randn(n, dim, dtype=torch.float64, requires_grad=True)
    teacher_s, teacher_t = torch.randn(n, 5, dtype=torch.float64), torch.randn(n, 5, dtype=torch.float64)
    labels = soft_labels(teacher_s, teacher_t, kind=kind, tau=0.05)
    negatives = torch.randn(6, dim, dtype=torch.float64, requires_grad=True)
    settings = {"tau": TAU, "margin": 0.1, "negatives_all": negatives, "monolingual": monolingual}

    def total(parts):
        return sum(part for part in parts if part is not None)

    whole = total(contrastive_sums(src, tgt, src, tgt, labels, labels.T, offset=0, **settings))
    whole_grads = torch.autograd.grad(whole, (src, tgt, negatives))
    shares = sum(
        total(
            contrastive_sums(
                src[o : o + block],
                tgt[o : o + block],
                src,
                tgt,
                labels[o : o + block],
                labels[:, o : o + block].T,
                offset=o,
                **settings,
            )
        )
        for o in range(0, n, block)
    )
    torch.testing.assert_close(shares, whole, rtol=1e-12, atol=1e-12)
    for got, expected in zip(torch.autograd.grad(shares, (src, tgt, negatives)), whole_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


def test_the_local_form_of_one_process_is_the_full_form():
    full = SoftContrastiveLoss("average", tau=TAU, lam=0.1)(single())
    local = SoftContrastiveLoss("average", tau=TAU, lam=0.1, local=True)(single())
    torch.testing.assert_close(local.value, full.value, rtol=1e-12, atol=1e-12)
    for name, value in (full.terms | full.statistics).items():
        torch.testing.assert_close((local.terms | local.statistics)[name], value, rtol=1e-12, atol=1e-12)


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
    loss = SoftContrastiveLoss("priority", tau=tau, teacher_tau=0.05, lam=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        src, tgt = projection(inputs_s), projection(inputs_t)
        assert src.dtype == torch.bfloat16
        mixed = loss(LossInputs.single_process(src, tgt, teacher.bfloat16())).value
        mixed_labels = soft_labels(teacher.bfloat16(), kind="priority", tau=0.05)
    assert mixed.dtype == torch.float32 and torch.isfinite(mixed)
    assert mixed_labels.dtype == torch.float32
    same_values = loss(LossInputs.single_process(src.float(), tgt.float(), teacher.bfloat16().float())).value
    torch.testing.assert_close(mixed, same_values, rtol=1e-5, atol=1e-5)
    exact = loss(LossInputs.single_process(projection(inputs_s), projection(inputs_t), teacher)).value
    assert mixed.item() == pytest.approx(exact.item(), rel=0.05)


def test_bad_inputs_and_settings_raise_clear_errors():
    src, tgt = torch.randn(4, 8), torch.randn(4, 8)
    with pytest.raises(ValueError, match=r"tgt \[3, 8\] is not the shape of src \[4, 8\]"):
        LossInputs.single_process(src, tgt[:3])
    with pytest.raises(ValueError, match="teacher_anchor covers 3 pairs, the global batch 4"):
        LossInputs.single_process(src, tgt, torch.randn(3, 8))
    with pytest.raises(ValueError, match="tau must be positive"):
        InfoNCELoss(tau=0.0)
    with pytest.raises(ValueError, match="both languages"):
        SoftContrastiveLoss("average", tau=TAU)(LossInputs.single_process(src, tgt, torch.randn(4, 8)))
    with pytest.raises(ValueError, match="needs the teacher embeddings"):
        SoftContrastiveLoss("priority", tau=TAU)(LossInputs.single_process(src, tgt))
    with pytest.raises(ValueError, match="unknown soft-label kind 'hard'"):
        SoftContrastiveLoss("hard", tau=TAU)
    with pytest.raises(ValueError, match="unknown label kind 'soft'"):
        soft_labels(src, kind="soft", tau=TAU)
    with pytest.raises(ValueError, match="one shape"):
        EmbeddingMSELoss()(LossInputs.single_process(src, tgt, torch.randn(4, 6)))


# ------------------------------------------------------------------------------------------- the factory
def test_the_factory_builds_each_named_loss_from_the_config():
    soft = build_loss(
        LossConfig(name="soft", labels="average", tau=0.05, teacher_tau=0.02, lam=0.3, local=True)
    )
    assert isinstance(soft, SoftContrastiveLoss)
    assert (soft.labels, soft.tau, soft.teacher_tau, soft.lam, soft.local) == (
        "average",
        0.05,
        0.02,
        0.3,
        True,
    )
    assert build_loss(LossConfig(name="soft", tms=False)).lam is None
    assert build_loss(LossConfig(name="soft")).teacher_tau == LossConfig().tau
    infonce = build_loss(LossConfig(name="infonce", margin=0.2))
    assert type(infonce) is InfoNCELoss and infonce.margin == 0.2 and not infonce.needs_teacher
    assert isinstance(build_loss(LossConfig(name="hard_negatives")), HardNegativesLoss)
    assert build_loss(LossConfig(name="hard_negatives")).needs_negatives
    assert isinstance(build_loss(LossConfig(name="mse")), EmbeddingMSELoss)
    assert set(LOSSES) == {"soft", "infonce", "mse", "hard_negatives"}
    for name, cls in LOSSES.items():
        assert cls.name == name


def test_the_old_loss_label_key_names_the_new_keys():
    with pytest.raises(
        InputError, match=r"command line \(loss.label=hard\): loss.label is gone; use loss.name"
    ):
        load_config(None, ["loss.label=hard"])
    with pytest.raises(InputError, match=r"loss\.labels \(priority, average\)"):
        load_config(None, ["loss.label=priority"])
    with pytest.raises(InputError, match="IMASCL_FAULT_AT_STEP"):
        load_config(None, ["debug.fail_at_step=3"])
    config = load_config(None, ["loss.name=infonce", "loss.labels=average"])
    assert (config.loss.name, config.loss.labels) == ("infonce", "average")
    with pytest.raises(
        InputError, match=r"loss\.name must be one of 'soft', 'infonce', 'mse', 'hard_negatives'"
    ):
        load_config(None, ["loss.name=hard"])


# ------------------------------------------------------------------- past the paper: hard/soft label mix
def hand_mixed(w, a):
    """``a * I + (1 - a) * w``: the translation keeps at least ``a`` of each row's label."""
    n = len(w)
    return [[a * (i == j) + (1 - a) * w[i][j] for j in range(n)] for i in range(n)]


@pytest.mark.parametrize("lam", [None, 0.1])
@pytest.mark.parametrize("kind", ["priority", "average"])
def test_the_hard_mix_is_the_loss_of_mixed_labels(kind, lam):
    a = 0.3
    soft = (
        hand_priority(TEACHER_SRC, TAU) if kind == "priority" else hand_average(TEACHER_SRC, TEACHER_TGT, TAU)
    )
    w = hand_mixed(soft, a)
    cross = hand_row_loss(SRC, TGT, w, TAU) + hand_col_loss(SRC, TGT, w, TAU)
    expected = cross if lam is None else lam * cross + hand_mono_loss(SRC, TGT, w, TAU)
    entropy, diagonal = hand_label_statistics(w)
    for local in (False, True):
        output = SoftContrastiveLoss(kind, tau=TAU, lam=lam, hard_mix=a, local=local)(single())
        assert output.value.item() == pytest.approx(expected, rel=1e-12)
        assert output.terms["cross"].item() == pytest.approx(cross, rel=1e-12)
        assert output.statistics["entropy"].item() == pytest.approx(entropy, rel=1e-12)
        assert output.statistics["diagonal"].item() == pytest.approx(diagonal, rel=1e-12)


def test_a_hard_mix_of_0_is_the_soft_loss_and_of_1_hard_infonce():
    for lam in (None, 0.1):
        soft = SoftContrastiveLoss("priority", tau=TAU, lam=lam)(single())
        zero = SoftContrastiveLoss("priority", tau=TAU, lam=lam, hard_mix=0.0)(single())
        assert torch.equal(zero.value, soft.value)
        one = SoftContrastiveLoss("priority", tau=TAU, lam=lam, hard_mix=1.0)(single())
        hard = InfoNCELoss(tau=TAU, lam=lam)(single(anchor=None, other=None))
        assert one.value.item() == pytest.approx(hard.value.item(), rel=1e-12)
        assert one.statistics["diagonal"].item() == pytest.approx(1.0) and one.statistics["entropy"] == 0
    # the targets themselves: a = 1 gives the identity's rows and columns on every block of rows
    n, block = 8, 4
    torch.manual_seed(4)
    teacher, src, tgt = (torch.randn(n, 5, dtype=torch.float64) for _ in range(3))
    loss = SoftContrastiveLoss("priority", tau=TAU, hard_mix=1.0, local=True)
    whole_lse = torch.logsumexp(F.normalize(teacher, dim=1) @ F.normalize(teacher, dim=1).T / TAU, dim=1)
    for offset in (0, block):
        inputs = LossInputs(
            src[offset : offset + block], tgt[offset : offset + block], src, tgt, teacher,
            offset=offset, world_size=2, gather=lambda _, lse=whole_lse: lse,
        )  # fmt: skip
        eye = torch.eye(n, dtype=torch.float64)[offset : offset + block]
        labels = loss.label_blocks(inputs, inputs.rows)
        torch.testing.assert_close(labels.rows, eye, rtol=0, atol=1e-15)
        torch.testing.assert_close(labels.columns, eye, rtol=0, atol=1e-15)


def test_a_partial_hard_mix_puts_its_floor_on_every_block_of_columns():
    """The local form's column block of ``a I + (1 - a) w`` is ``w[:, R].T`` mixed at the block's offset."""
    n, block, a = 8, 4, 0.4
    torch.manual_seed(6)
    teacher, src, tgt = (torch.randn(n, 5, dtype=torch.float64) for _ in range(3))
    w = soft_labels(teacher, kind="priority", tau=TAU)
    mixed = a * torch.eye(n, dtype=torch.float64) + (1 - a) * w
    loss = SoftContrastiveLoss("priority", tau=TAU, hard_mix=a, local=True)
    whole_lse = torch.logsumexp(F.normalize(teacher, dim=1) @ F.normalize(teacher, dim=1).T / TAU, dim=1)
    for offset in (0, block):
        inputs = LossInputs(
            src[offset : offset + block], tgt[offset : offset + block], src, tgt, teacher,
            offset=offset, world_size=2, gather=lambda _, lse=whole_lse: lse,
        )  # fmt: skip
        labels = loss.label_blocks(inputs, inputs.rows)
        torch.testing.assert_close(labels.rows, mixed[offset : offset + block], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            labels.columns, mixed[:, offset : offset + block].T, rtol=1e-12, atol=1e-12
        )


def test_the_hard_mix_comes_from_the_config_and_is_checked():
    assert build_loss(LossConfig(name="soft", hard_mix=0.25)).hard_mix == 0.25
    assert build_loss(LossConfig(name="soft")).hard_mix == 0.0  # the paper's labels by default
    assert load_config(None, ["loss.hard_mix=0.5"]).loss.hard_mix == 0.5
    for bad in ("1.5", "-0.1"):
        with pytest.raises(InputError, match=rf"loss.hard_mix must be in \[0, 1\], got {bad}"):
            load_config(None, [f"loss.hard_mix={bad}"])
    with pytest.raises(ValueError, match="hard_mix must be in"):
        SoftContrastiveLoss("priority", tau=TAU, hard_mix=2.0)
    assert torch.autograd.gradcheck(
        lambda s, t: (
            SoftContrastiveLoss("average", tau=TAU, lam=0.1, hard_mix=0.5)(
                LossInputs.single_process(s, t, t64(TEACHER_SRC), t64(TEACHER_TGT))
            ).value
        ),
        (t64(SRC, grad=True), t64(TGT, grad=True)),
    )
