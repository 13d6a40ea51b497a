"""The procedures against hand-written PyTorch loops with the same networks, data and random draws."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch
import torch.nn.functional as F

from genframe import SpecError, calibrate_batch_norm
from genframe.training.context import BuildContext, EpochBatches, StageContext
from genframe.ops.images import to_float
from genframe.ops.neighbours import nearest_neighbours
from genframe_plugins.objectives.constraints import GradientPenalty
from genframe_plugins.objectives.divergences import Wasserstein
from genframe_plugins.networks.encoders import ConvEncoder, GaussianEncoder
from genframe_plugins.trainers.fit_prior import FitPrior
from genframe_plugins.objectives.latent_divergences import KL, MMD
from genframe_plugins.networks.latents import LatentCodes
from genframe_plugins.objectives.losses import L2
from genframe_plugins.networks.mappers import MLPMapper
from genframe_plugins.networks.dcgan import DCGANCritic, DCGANGenerator
from genframe_plugins.trainers.optimisers import Adam, Constant
from genframe_plugins.networks.priors import FittedGaussian, Gaussian
from genframe_plugins.trainers.adversarial import Adversarial
from genframe_plugins.trainers.autoencoding import Autoencoding
from genframe_plugins.trainers.imle import IMLE, _distinct_nearest

CPU = torch.device("cpu")


def _context(components: dict, n: int = 32, seed: int = 0) -> StageContext:
    torch.manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8)
    build = BuildContext(num_examples=n, channels=1, image_size=8, device=CPU, seed=seed, images=images)
    for c in components.values():
        c.setup(build)
    return StageContext(build=build, components=components, stage="s", stage_index=0,
                        generator=torch.Generator().manual_seed(seed + 1))


def _adam(lr: float, betas=(0.5, 0.999), weight_decay=0.0) -> Adam:
    return Adam(lr=lr, betas=betas, weight_decay=weight_decay, schedule=Constant())


def test_adversarial_step_equals_a_hand_written_wgan_gp_step():
    ctx = _context({"generator": DCGANGenerator(latent_dim=4, width=4), "critic": DCGANCritic(width=4),
                    "prior": Gaussian(dim=4)})
    g, d = copy.deepcopy(ctx.components["generator"]), copy.deepcopy(ctx.components["critic"])
    noise_gen = torch.Generator().manual_seed(0)
    noise_gen.set_state(ctx.generator.get_state())
    trainer = Adversarial(divergence=Wasserstein(), constraints=[GradientPenalty(weight=10.0)], n_critic=2,
                          batch_size=8, steps=3, optimizer=_adam(1e-3, (0.0, 0.9)))
    trainer.bind(ctx)
    torch.manual_seed(123)  # the penalty's interpolation weights come from the global generator
    for step in range(2):
        trainer.train_step(step)

    # the same two steps by hand
    opt_g = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.0, 0.9))
    opt_d = torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.0, 0.9))
    batches = EpochBatches(32, 8, seed=0 * 7919 + 0, device=CPU)
    torch.manual_seed(123)
    for step in range(2):
        for k in range(2):
            real = to_float(ctx.images[batches.indices(step * 2 + k)])
            with torch.no_grad():
                fake = g(torch.randn(8, 4, generator=noise_gen))
            loss = d(fake).mean() - d(real).mean()
            eps = torch.rand(8, 1, 1, 1)
            x = (eps * real + (1 - eps) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(d(x).sum(), x, create_graph=True)
            loss = loss + 10.0 * (grad.flatten(1).norm(dim=1) - 1).square().mean()
            opt_d.zero_grad()
            loss.backward()
            opt_d.step()
        g_loss = -d(g(torch.randn(8, 4, generator=noise_gen))).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
    for mine, ref in [(ctx.components["generator"], g), (ctx.components["critic"], d)]:
        for (name, a), b in zip(mine.state_dict().items(), ref.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_autoencoding_step_equals_a_hand_written_glo_step():
    ctx = _context({"codes": LatentCodes(dim=4, init="random"), "generator": DCGANGenerator(latent_dim=4, width=4)})
    codes, g = copy.deepcopy(ctx.components["codes"]), copy.deepcopy(ctx.components["generator"])
    trainer = Autoencoding(encoder="codes", generator="generator", loss=L2(), epochs=1, batch_size=8,
                           optimizer=_adam(1e-3), encoder_optimizer=_adam(1e-2))
    trainer.bind(ctx)
    assert trainer.total_steps() == 4
    for step in range(3):
        trainer.train_step(step)

    opt_g = torch.optim.Adam(g.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_z = torch.optim.Adam(codes.parameters(), lr=1e-2, betas=(0.5, 0.999))
    batches = EpochBatches(32, 8, seed=0, device=CPU)
    for step in range(3):
        idx = batches.indices(step)
        x = to_float(ctx.images[idx])
        loss = (g(codes.codes[idx]) - x).square().flatten(1).sum(1).mean()
        opt_g.zero_grad()
        opt_z.zero_grad()
        loss.backward()
        opt_g.step()
        opt_z.step()
        with torch.no_grad():
            codes.codes.copy_(F.normalize(codes.codes, dim=1))
    torch.testing.assert_close(ctx.components["codes"].codes, codes.codes, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ctx.components["codes"].codes.norm(dim=1), torch.ones(32))
    for a, b in zip(ctx.components["generator"].state_dict().values(), g.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _hand_kl(encoder, generator, x, noise):
    raw = encoder.net(x)
    mean, log_var = raw[:, :3], raw[:, 3:]
    z = mean + torch.exp(0.5 * log_var) * torch.randn(mean.shape, generator=noise)
    return z, 0.5 * (mean.square() + log_var.exp() - log_var - 1).sum(1).mean()


def _hand_mmd(encoder, generator, x, noise):
    z = encoder.net(x)
    y = torch.randn(z.shape, generator=noise)  # drawn after the encoder's (absent) noise, as in the trainer
    both = torch.cat([z, y])
    k = sum(torch.exp(-torch.cdist(both, both).square() / c) for c in (0.5 * 6.0, 2.0 * 6.0))
    n = z.shape[0]
    off = 1 - torch.eye(n)
    return z, (k[:n, :n] * off).sum() / (n * (n - 1)) + (k[n:, n:] * off).sum() / (n * (n - 1)) \
        - 2 * k[:n, n:].mean()


@pytest.mark.parametrize("encoder_cls, divergence, hand", [
    (GaussianEncoder, KL(weight=0.5), _hand_kl),
    (ConvEncoder, MMD(weight=3.0, kernel="rbf", scales=[0.5, 2.0], base=6.0), _hand_mmd),
], ids=["vae", "wae"])
def test_autoencoding_step_with_a_latent_divergence_equals_a_hand_written_step(encoder_cls, divergence, hand):
    ctx = _context({"encoder": encoder_cls(dim=3, width=4), "generator": DCGANGenerator(latent_dim=3, width=4),
                    "prior": Gaussian(dim=3)})
    enc, g = copy.deepcopy(ctx.components["encoder"]), copy.deepcopy(ctx.components["generator"])
    noise = torch.Generator().manual_seed(0)
    noise.set_state(ctx.generator.get_state())
    trainer = Autoencoding(encoder="encoder", generator="generator", loss=L2(), latent_divergence=divergence,
                           epochs=1, batch_size=8, optimizer=_adam(1e-3), encoder_optimizer=None)
    trainer.bind(ctx)
    logged = [trainer.train_step(step) for step in range(3)]

    opt = torch.optim.Adam([*g.parameters(), *enc.parameters()], lr=1e-3, betas=(0.5, 0.999))
    batches = EpochBatches(32, 8, seed=0, device=CPU)
    for step in range(3):
        x = to_float(ctx.images[batches.indices(step)])
        z, term = hand(enc, g, x, noise)
        reconstruction = (g(z) - x).square().flatten(1).sum(1).mean()
        loss = reconstruction + divergence.weight * term
        opt.zero_grad()
        loss.backward()
        opt.step()
        torch.testing.assert_close(logged[step][divergence.type_name], term.detach(), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(logged[step]["loss"], loss.detach(), rtol=1e-4, atol=1e-5)
    for mine, ref in [(ctx.components["generator"], g), (ctx.components["encoder"], enc)]:
        for (name, a), b in zip(mine.state_dict().items(), ref.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_autoencoding_refuses_kl_without_a_gaussian_encoder():
    components = {"encoder": ConvEncoder(dim=3, width=4), "generator": DCGANGenerator(latent_dim=3, width=4)}
    trainer = Autoencoding(encoder="encoder", generator="generator", loss=L2(), latent_divergence=KL(),
                           optimizer=_adam(1e-3), encoder_optimizer=None)
    with pytest.raises(SpecError, match="kl needs an encoder with a Gaussian posterior") as info:
        trainer.check(components, "stages[0].trainer")
    assert info.value.path == "stages[0].trainer.latent_divergence.type"


def test_fit_prior_fits_a_gaussian_to_the_codes_in_one_step():
    ctx = _context({"codes": LatentCodes(dim=4, init="random"), "gaussian": FittedGaussian(dim=4),
                    "plain": Gaussian(dim=4), "wide": FittedGaussian(dim=5)})
    trainer = FitPrior(prior="gaussian", encoder="codes")
    trainer.bind(ctx)
    assert trainer.total_steps() == 1
    nll = trainer.train_step(0)["nll"]
    codes = ctx.components["codes"].codes.detach().double()
    fitted = ctx.components["gaussian"]
    torch.testing.assert_close(fitted.mean.double(), codes.mean(0), rtol=0, atol=1e-6)
    covariance = fitted.scale_tril.double() @ fitted.scale_tril.double().T
    torch.testing.assert_close(covariance, torch.cov(codes.T) + 1e-6 * torch.eye(4, dtype=torch.float64),
                               rtol=1e-5, atol=1e-7)
    assert nll.item() == pytest.approx(-torch.distributions.MultivariateNormal(
        codes.mean(0), covariance).log_prob(codes).mean().item(), rel=1e-5)
    trainer.check(ctx.components, "stages[1].trainer")
    with pytest.raises(SpecError, match="prior 'plain' is a gaussian, which has no parameters to fit; "
                                        "declare a fitted_gaussian"):
        FitPrior(prior="plain", encoder="codes").check(ctx.components, "stages[1].trainer")
    with pytest.raises(SpecError, match="encoder 'codes' makes 4-d codes but prior 'wide' has dim 5") as info:
        FitPrior(prior="wide", encoder="codes").check(ctx.components, "stages[1].trainer")
    assert info.value.path == "stages[1].trainer.prior"


def test_imle_in_image_space_regresses_a_generator_onto_its_nearest_samples():
    from sklearn.datasets import load_digits

    ctx = _context({"generator": DCGANGenerator(latent_dim=4, width=8), "prior": Gaussian(dim=4)}, n=32)
    digits = torch.from_numpy(load_digits().images[:32] * (255 / 16)).round().to(torch.uint8)
    ctx.build.images = digits.unsqueeze(1)  # structured images: random pixels leave nothing to learn
    trainer = IMLE(model="generator", prior="prior", targets="data", epochs=10, batch_size=8, sample_factor=10.0,
                   staleness=5, noise=0.01, optimizer=_adam(1e-2, weight_decay=1e-5))
    trainer.bind(ctx)
    selections, losses = [], []
    for step in range(trainer.total_steps()):
        losses.append(trainer.train_step(step)["loss"].item())
        if step % 4 == 3:  # end of each epoch (32 images / 8)
            selections.append(trainer._selected.clone())
    assert trainer._selected.shape == (32, 4)
    # re-drawn only at the start of epochs 0 and 5 (staleness 5)
    assert all(torch.equal(selections[0], s) for s in selections[1:5])
    assert all(torch.equal(selections[5], s) for s in selections[6:])
    assert not torch.equal(selections[0], selections[5])
    assert sum(losses[-4:]) < 0.7 * sum(losses[:4])


def test_imle_pairs_each_target_with_its_nearest_sample_and_fits_them():
    ctx = _context({"mapper": MLPMapper(in_dim=2, out_dim=2, hidden=[32], batch_norm=False),
                    "prior": Gaussian(dim=2)}, n=64)
    targets = torch.randn(64, 2, generator=torch.Generator().manual_seed(5)) * 3 + 1
    trainer = IMLE(model="mapper", prior="prior", targets="data", epochs=60, batch_size=16, sample_factor=4.0,
                   optimizer=_adam(1e-2))
    trainer.bind(ctx)
    trainer._targets = targets  # fit 2-d points instead of images: same procedure, easy to check
    trainer._selected = torch.zeros(64, 2)

    state = ctx.generator.get_state()
    trainer.train_step(0)  # refreshes the pairing first: each target gets one of the 256 pooled inputs
    pool = torch.randn(256, 2, generator=torch.Generator().manual_seed(0).set_state(state))
    assert set(map(tuple, trainer._selected.tolist())) <= set(map(tuple, pool.tolist()))
    mapper = ctx.components["mapper"]
    losses = []
    for step in range(1, trainer.total_steps()):
        losses.append(trainer.train_step(step)["loss"].item())
    assert losses[-1] < 0.2 * losses[0]
    with torch.no_grad():
        mapper.eval()
        samples = mapper(torch.randn(4096, 2, generator=torch.Generator().manual_seed(9)))
    # every target has a generated sample close to it: IMLE covers all modes
    _, dist = nearest_neighbours(targets, samples)
    assert dist.sqrt().max() < 1.0


def _imle_on_random_targets(batch_size: int, **settings) -> tuple[IMLE, StageContext]:
    """IMLE fitting a 3 -> 8 -> 5 batch-norm mapper to 40 fixed random 5-d targets, with a pool of 120."""
    ctx = _context({"mapper": MLPMapper(in_dim=3, out_dim=5, hidden=[8]), "prior": Gaussian(dim=3)}, n=40)
    trainer = IMLE(model="mapper", prior="prior", targets="data", epochs=1, batch_size=batch_size, sample_factor=3.0,
                   optimizer=_adam(1e-3), **settings)
    trainer.bind(ctx)
    trainer._targets = torch.randn(40, 5, generator=torch.Generator().manual_seed(3))
    return trainer, ctx


def _refreshed_pool(trainer: IMLE, ctx: StageContext) -> torch.Tensor:
    """Refresh the pairing and return the pool it drew, re-drawn from the same generator state."""
    state = ctx.generator.get_state()
    trainer._refresh()
    return torch.randn(120, 3, generator=torch.Generator().manual_seed(0).set_state(state))


def test_imle_refresh_uses_exact_nearest_neighbours():
    trainer, ctx = _imle_on_random_targets(8)
    pool = _refreshed_pool(trainer, ctx)
    mapper = ctx.components["mapper"].eval()
    with torch.no_grad():
        expected = pool[torch.cdist(trainer._targets.double(), mapper(pool).double()).argmin(1)]
    torch.testing.assert_close(trainer._selected, expected)


def test_distinct_pairing_gives_a_contested_sample_to_the_closer_target():
    samples = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
    # both targets are nearest to sample 0; the first is closer to it, the second's next best is sample 1
    targets = torch.tensor([[0.1, 0.0], [1.0, 0.0]])
    assert _distinct_nearest(targets, samples).tolist() == [0, 1]
    assert _distinct_nearest(targets.flip(0), samples).tolist() == [1, 0]
    # a tie goes to the first target
    assert _distinct_nearest(torch.tensor([[0.0, 1.0], [0.0, -1.0]]), samples).tolist() == [0, 1]


def test_distinct_pairing_lets_the_last_targets_share_when_samples_run_out():
    samples = torch.tensor([[0.0], [10.0]])
    targets = torch.tensor([[1.0], [2.0], [9.0]])
    # first round: 1 takes 0 (2 is farther from it) and 9 takes 10; no sample is left for 2, which takes its nearest
    assert _distinct_nearest(targets, samples).tolist() == [0, 0, 1]


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 30), st.integers(0, 30), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_distinct_pairing_property(n_targets, extra, dim, seed):
    g = torch.Generator().manual_seed(seed)
    targets, samples = torch.randn(n_targets, dim, generator=g), torch.randn(n_targets + extra, dim, generator=g)
    chosen = _distinct_nearest(targets, samples)
    assert chosen.unique().numel() == n_targets  # no two targets share a sample
    nearest = torch.cdist(targets.double(), samples.double()).argmin(1)
    counts = torch.bincount(nearest, minlength=len(samples))
    alone = counts[nearest] == 1  # a target whose nearest sample nobody else wants keeps it
    assert torch.equal(chosen[alone], nearest[alone])


def test_imle_with_distinct_pairing_pairs_every_target_with_its_own_pool_sample():
    trainer, ctx = _imle_on_random_targets(8, pairing="distinct")
    pool = _refreshed_pool(trainer, ctx)
    mapper = ctx.components["mapper"].eval()
    with torch.no_grad():
        expected = pool[_distinct_nearest(trainer._targets, mapper(pool))]
    torch.testing.assert_close(trainer._selected, expected)
    assert trainer._selected.unique(dim=0).shape[0] == 40


def test_imle_pool_with_batch_statistics_maps_chunks_in_train_mode_and_keeps_running_statistics():
    trainer, ctx = _imle_on_random_targets(16, pool_statistics="batch")
    mapper = ctx.components["mapper"]
    running = {k: v.clone() for k, v in mapper.state_dict().items() if "running" in k}
    pool = _refreshed_pool(trainer, ctx)
    reference = copy.deepcopy(mapper).train()
    with torch.no_grad():  # 120 rows in 8 near-equal chunks of 15, each normalised by its own statistics
        mapped = torch.cat([reference(part) for part in torch.tensor_split(pool, 8)])
        expected = pool[torch.cdist(trainer._targets.double(), mapped.double()).argmin(1)]
    torch.testing.assert_close(trainer._selected, expected)
    assert mapper.training
    for key, value in running.items():  # the pool is not a training step: running statistics are untouched
        assert torch.equal(mapper.state_dict()[key], value)
    eval_mapped = copy.deepcopy(mapper).eval()(pool)
    assert not torch.allclose(eval_mapped, mapped)  # the two settings really differ


def test_imle_last_step_measures_batch_norm_statistics_on_fresh_prior_noise():
    def trained(calibrate: bool):
        ctx = _context({"mapper": MLPMapper(in_dim=3, out_dim=5, hidden=[8]), "prior": Gaussian(dim=3)}, n=32)
        trainer = IMLE(model="mapper", prior="prior", targets="data", epochs=2, batch_size=8, sample_factor=2.0,
                       calibrate_statistics=calibrate, optimizer=_adam(1e-2))
        trainer.bind(ctx)
        trainer._targets = torch.randn(32, 5, generator=torch.Generator().manual_seed(3))
        last = trainer.total_steps() - 1
        for step in range(last):
            trainer.train_step(step)
        state = ctx.generator.get_state()
        trainer.train_step(last)
        return trainer, ctx, state, last

    trainer, ctx, state, last = trained(True)
    assert not trainer.replayable(last) and trainer.replayable(last - 1)
    mapper = ctx.components["mapper"]
    assert mapper.training
    pool = torch.randn(64, 3, generator=torch.Generator().manual_seed(0).set_state(state))
    with torch.no_grad():
        entering = mapper.net[0](pool)  # what the batch norm sees of the 64 noise vectors
    torch.testing.assert_close(mapper.net[1].running_mean, entering.mean(0))
    torch.testing.assert_close(mapper.net[1].running_var, entering.var(0))

    plain, plain_ctx, _, _ = trained(False)
    assert plain.replayable(last)
    # without calibration the statistics are the momentum average of the matched-noise batches
    assert not torch.allclose(plain_ctx.components["mapper"].net[1].running_var, entering.var(0))


def test_imle_pool_with_prior_statistics_pairs_as_a_calibrated_mapper_samples():
    trainer, ctx = _imle_on_random_targets(16, pool_statistics="prior")
    mapper = ctx.components["mapper"]
    mapper.net[1].running_mean.fill_(0.5)  # statistics that differ from the pool's
    before = copy.deepcopy(mapper.state_dict())
    pool = _refreshed_pool(trainer, ctx)
    reference = copy.deepcopy(mapper)
    reference.load_state_dict(before)
    calibrate_batch_norm(reference, [pool])
    with torch.no_grad():
        expected = pool[torch.cdist(trainer._targets.double(), reference.eval()(pool).double()).argmin(1)]
    torch.testing.assert_close(trainer._selected, expected)
    assert mapper.training
    for key, value in before.items():  # the pool's statistics served the pairing only
        assert torch.equal(mapper.state_dict()[key], value), key


def test_restart_optimizer_gives_the_moments_of_a_newly_built_adam():
    ctx = _context({"mapper": MLPMapper(in_dim=3, out_dim=5, hidden=[8], batch_norm=False),
                    "prior": Gaussian(dim=3)}, n=32)
    trainer = IMLE(model="mapper", prior="prior", targets="data", epochs=3, batch_size=16, sample_factor=2.0,
                   restart_optimizer=True, optimizer=_adam(1e-2))
    trainer.bind(ctx)
    trainer._targets = torch.randn(32, 5, generator=torch.Generator().manual_seed(3))
    trainer._selected = torch.zeros(32, 3)
    mapper = ctx.components["mapper"]
    for step in range(2):  # epoch 0
        trainer.train_step(step)
    weights = copy.deepcopy(mapper.state_dict())
    trainer.train_step(2)  # epoch 1 begins: new pairing, moments forgotten, then one step
    twin = copy.deepcopy(mapper)
    twin.load_state_dict(weights)
    fresh = torch.optim.Adam(twin.parameters(), lr=1e-2, betas=(0.5, 0.999))
    indices = trainer._batches.indices(2)
    loss = F.mse_loss(twin(trainer._selected[indices]), trainer._targets[indices])
    fresh.zero_grad()
    loss.backward()
    fresh.step()
    for ours, theirs in zip(mapper.parameters(), twin.parameters()):
        torch.testing.assert_close(ours, theirs)
    steps = [s["step"] for s in trainer._optimisers["model"].state.values()]
    assert all(float(step) == 1 for step in steps)
    assert not trainer.replayable(2) and trainer.replayable(3)


def test_glo_restart_optimizer_forgets_moments_at_each_epoch_start_only():
    ctx = _context({"codes": LatentCodes(dim=4, init="random"), "generator": DCGANGenerator(latent_dim=4, width=8)},
                   n=32)
    trainer = Autoencoding(encoder="codes", generator="generator", loss=L2(), epochs=2, batch_size=16,
                           restart_optimizer=True, optimizer=_adam(1e-3), encoder_optimizer=_adam(1e-2))
    trainer.bind(ctx)
    counts = []
    for step in range(4):
        trainer.train_step(step)
        counts.append(max(float(s["step"]) for s in trainer._optimisers["generator"].state.values()))
    assert counts == [1, 2, 1, 2]  # steps 2 and 3 are epoch 1: counting starts again
    assert [trainer.replayable(step) for step in range(4)] == [True, True, False, True]


@pytest.mark.parametrize("trainer_cls", [Autoencoding, IMLE, Adversarial, FitPrior])
def test_trainers_are_registered(trainer_cls):
    from genframe.components.registry import create_registry

    assert create_registry().get("trainer", trainer_cls.type_name) is trainer_cls
