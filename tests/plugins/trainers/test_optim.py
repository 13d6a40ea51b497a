import math

import pytest
import torch

from genframe import GenframeError, SpecError
from genframe.build.system import instantiate
from genframe.components.registry import create_registry
from genframe_plugins.trainers import optimisers as optim
from genframe.training.optimisers import build_optimizer
from genframe_plugins.trainers.optimisers import Adam, Constant, Linear, Plateau, RMSProp, Step


def two_parameter_sets():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(5, 3, generator=gen)
    b = torch.randn(3, generator=gen)
    x = torch.randn(8, 5, generator=gen)
    return [(w.clone().requires_grad_(True), b.clone().requires_grad_(True)) for _ in range(2)], x


def take_steps(optimizer, params, x, steps=3):
    w, b = params
    for _ in range(steps):
        optimizer.zero_grad()
        ((x @ w + b).tanh().square().sum()).backward()
        optimizer.step()


def test_adam_steps_equal_torch_adam():
    (ours, theirs), x = two_parameter_sets()
    take_steps(Adam(schedule=Constant()).build(ours), ours, x)
    take_steps(torch.optim.Adam(theirs, lr=2e-4, betas=(0.5, 0.999), eps=1e-8, weight_decay=0), theirs, x)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    assert not torch.equal(ours[0], two_parameter_sets()[0][0][0])  # it did move


def test_adam_with_settings_and_param_groups():
    (ours, theirs), x = two_parameter_sets()
    adam = Adam(lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1, schedule=Constant())
    built = adam.build([{"params": ours[0]}, {"params": [ours[1]], "lr": 1e-3}])
    take_steps(built, ours, x)
    reference = torch.optim.Adam([{"params": [theirs[0]]}, {"params": [theirs[1]], "lr": 1e-3}], lr=1e-2,
                                 betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1)
    take_steps(reference, theirs, x)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_rmsprop_steps_equal_torch_rmsprop():
    (ours, theirs), x = two_parameter_sets()
    take_steps(RMSProp(schedule=Constant()).build(p for p in ours), ours, x)  # a generator works too
    take_steps(torch.optim.RMSprop(theirs, lr=5e-5, alpha=0.99, eps=1e-8, weight_decay=0), theirs, x)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_fused_adam_follows_the_reference_adam():
    (ours, theirs), x = two_parameter_sets()
    built = Adam(lr=1e-2, weight_decay=0.01, fused=True, schedule=Constant()).build(ours)
    assert built.defaults["fused"] is True and built.defaults["foreach"] is None
    take_steps(built, ours, x, steps=5)
    take_steps(torch.optim.Adam(theirs, lr=1e-2, betas=(0.5, 0.999), weight_decay=0.01), theirs, x, steps=5)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)  # one kernel, other rounding order


def test_cpu_parameters_get_no_device_options():
    (ours, _), _ = two_parameter_sets()
    built = Adam(schedule=Constant()).build(ours)
    assert built.defaults["foreach"] is None and built.defaults["capturable"] is False


def test_step_schedule():
    schedule = Step(every_epochs=20, gamma=0.5)
    values = [schedule.factor(epoch, 0.0) for epoch in (0, 19.9, 20, 45)]
    assert values == [1.0, 1.0, 0.5, 0.25]
    # fractional epochs that land on a boundary through float rounding still count
    assert Step(every_epochs=0.1).factor(0.30000000000000004, 0.0) == 0.125
    assert Step(every_epochs=0.1).factor(3 * 0.1, 0.0) == 0.125


def test_linear_and_constant_schedules():
    assert Linear().factor(0.0, 0.0) == 1.0
    assert Linear().factor(3.0, 1.0) == 0.0
    assert Linear(final=0.1).factor(1.0, 0.5) == pytest.approx(0.55)
    assert Linear(final=0.1).factor(9.0, 1.0) == pytest.approx(0.1)
    assert Linear().factor(0.0, 1.5) == 0.0  # progress past the end does not go negative
    assert Constant().factor(7.0, 0.3) == 1.0


def test_build_optimizer_steps_the_schedule_every_step():
    (ours, _), x = two_parameter_sets()
    steps_per_epoch, total = 10, 100
    adam = Adam(lr=0.1, schedule=Step(every_epochs=2, gamma=0.1))
    optimizer, scheduler = build_optimizer(adam, ours, lambda s: (s / steps_per_epoch, s / total))
    lrs = []
    for _ in range(45):
        lrs.append(optimizer.param_groups[0]["lr"])
        take_steps(optimizer, ours, x, steps=1)
        scheduler.step()
    assert lrs[0] == lrs[19] == pytest.approx(0.1)
    assert lrs[20] == lrs[39] == pytest.approx(0.01)
    assert lrs[40] == pytest.approx(0.001)

    _, linear = build_optimizer(RMSProp(lr=1.0, schedule=Linear()), ours, lambda s: (s / 10, s / 4))
    seen = [linear.get_last_lr()[0]]
    for _ in range(4):
        linear.optimizer.step()
        linear.step()
        seen.append(linear.get_last_lr()[0])
    assert seen == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0])


def test_build_optimizer_needs_a_built_schedule():
    (ours, _), _ = two_parameter_sets()
    with pytest.raises(TypeError, match="schedule"):
        build_optimizer(Adam(), ours, lambda s: (0.0, 0.0))  # schedule is still the spec dict


def test_spec_building_creates_the_default_schedule():
    registry = create_registry([optim], entry_points=False)
    adam = instantiate("optimizer", {"type": "adam", "betas": [0.0, 0.9]}, "opt", "<test>", registry)
    assert isinstance(adam.schedule, Constant) and adam.betas == (0.0, 0.9)
    assert adam.config() == {"type": "adam", "lr": 2e-4, "betas": [0.0, 0.9], "eps": 1e-8,
                             "weight_decay": 0.0, "fused": False, "schedule": {"type": "constant"}}
    rms = instantiate("optimizer", {"type": "rmsprop", "schedule": {"type": "step", "every_epochs": 5}},
                      "opt", "<test>", registry)
    assert isinstance(rms.schedule, Step) and rms.schedule.gamma == 0.5
    with pytest.raises(SpecError, match="betas"):
        instantiate("optimizer", {"type": "adam", "betas": [0.5, 1.0]}, "opt", "<test>", registry)


def test_plateau_lowers_the_rate_after_patience_intervals_without_improvement():
    plateau = Plateau(monitor="convergence", patience=2, gamma=0.5, threshold=0.01)
    seen = []
    for value in [1.0, 0.9, 0.895, 0.9, 0.8, 0.81, 0.805, 0.9]:
        plateau.observe({"convergence": value, "k": 0.0})
        seen.append(plateau.factor(0.0, 0.0))
    # 0.895 is not 1% below 0.9 (1 stall), 0.9 (2: halve), 0.8 improves, 0.81 and 0.805 (halve), 0.9 (1)
    assert seen == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25]
    state = plateau.state_dict()
    restored = Plateau(monitor="convergence", patience=2, gamma=0.5, threshold=0.01)
    restored.load_state_dict(state)
    for p in (plateau, restored):
        p.observe({"convergence": 0.9})
    assert restored.state_dict() == plateau.state_dict() == {"factor": 0.125, "best": 0.8, "stalled": 0}
    plateau.reset()
    assert plateau.factor(0.0, 0.0) == 1.0 and plateau.state_dict()["best"] is None


def test_plateau_in_max_mode_and_with_a_floor():
    plateau = Plateau(monitor="score", mode="max", patience=1, gamma=0.1, threshold=0.0, min_factor=0.05)
    for value in [1.0, 2.0, 1.5, 1.5, 3.0]:
        plateau.observe({"score": value})
    assert plateau.factor(0.0, 0.0) == 0.05  # 1.0 -> 0.1 -> 0.05 (floored), 3.0 improves
    with pytest.raises(GenframeError, match="monitor 'score' is not logged by this stage; it logs loss"):
        plateau.observe({"loss": 1.0})


def test_adamw_steps_equal_torch_adamw():
    (ours, theirs), x = two_parameter_sets()
    take_steps(optim.AdamW(lr=1e-2, weight_decay=0.1, schedule=Constant()).build(ours), ours, x)
    take_steps(torch.optim.AdamW(theirs, lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1), theirs, x)
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
    (adam, _), _ = two_parameter_sets()  # decoupled decay is not Adam's L2 penalty
    take_steps(Adam(lr=1e-2, betas=(0.9, 0.999), weight_decay=0.1, schedule=Constant()).build(adam), adam, x)
    assert not torch.equal(adam[0], ours[0])


def _lrs(schedule, total: int, steps_per_epoch: int = 10) -> list[float]:
    (ours, _), x = two_parameter_sets()
    optimizer, scheduler = build_optimizer(optim.AdamW(lr=1.0, schedule=schedule), ours,
                                           lambda s: (s / steps_per_epoch, s / total))
    seen = []
    for _ in range(total):
        seen.append(optimizer.param_groups[0]["lr"])
        take_steps(optimizer, ours, x, steps=1)
        scheduler.step()
    return seen


def test_cosine_follows_its_formula_and_torchs_cosine_annealing():
    total = 40
    ours = _lrs(optim.Cosine(final=0.1), total)
    assert ours == pytest.approx([0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / total)) for s in range(total)])
    (params, _), _ = two_parameter_sets()
    reference = torch.optim.lr_scheduler.CosineAnnealingLR(torch.optim.SGD(params, lr=1.0), T_max=total, eta_min=0.1)
    theirs = []
    for _ in range(total):
        theirs.append(reference.get_last_lr()[0])
        reference.optimizer.step()
        reference.step()
    assert ours == pytest.approx(theirs, abs=1e-12)


def test_a_linear_warmup_then_cosine_is_the_usual_recipe():
    total, warm = 50, 10  # a warm-up of 20% of training, as share or as one epoch of 10 steps
    expected = [s / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / (total - warm)))
                for s in range(total)]
    assert _lrs(optim.Warmup(share=0.2, then=optim.Cosine()), total) == pytest.approx(expected)
    assert _lrs(optim.Warmup(epochs=1.0, then=optim.Cosine()), total) == pytest.approx(expected)
    (params, _), _ = two_parameter_sets()  # torch's LinearLR from 0 for the warm-up part
    sgd = torch.optim.SGD(params, lr=1.0)
    linear = torch.optim.lr_scheduler.LinearLR(sgd, start_factor=1e-12, end_factor=1.0, total_iters=warm)
    theirs = []
    for _ in range(warm):
        theirs.append(linear.get_last_lr()[0])
        sgd.step()
        linear.step()
    assert expected[:warm] == pytest.approx(theirs, abs=1e-9)
    with pytest.raises(ValueError, match="share or as epochs"):
        optim.Warmup()
