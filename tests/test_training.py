"""The training loop: deterministic, resumable, EMA, and the loss targets diffusers trains on."""

import pytest
import torch
from diffusers import DDPMScheduler as DiffusersDDPM

from ddlearn.config import register_to_config
from ddlearn.losses import diffusion_loss, min_snr_weights, sample_timesteps, target_for
from ddlearn.models.modeling import ModelMixin
from ddlearn.schedulers.ddpm import DDPMScheduler
from ddlearn.training import EMA, latest_checkpoint, train


class Output:
    def __init__(self, sample):
        self.sample = sample


class TinyDenoiser(ModelMixin):
    @register_to_config
    def __init__(self, channels: int = 3):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 3, padding=1)
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x, t):
        return Output(self.conv(x) * self.scale + t.float().view(-1, 1, 1, 1) / 1000)


def make_run(tmp_path, num_steps, seed=0):
    torch.manual_seed(123)
    model = TinyDenoiser()
    scheduler = DDPMScheduler(num_train_timesteps=100)
    data = torch.rand(20, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    loss_fn = lambda m, batch, g: diffusion_loss(m, scheduler, batch, g)
    result = train(model, loss_fn, data, num_steps=num_steps, batch_size=4, lr=1e-2, ema_decay=0.9,
                   output_dir=tmp_path, save_every=3, seed=seed, progress=False)
    return model, result


def test_resuming_continues_the_run_instead_of_restarting(tmp_path):
    straight, straight_result = make_run(tmp_path / "straight", num_steps=6)
    make_run(tmp_path / "interrupted", num_steps=3)  # "crashes" after its checkpoint at step 3
    resumed, resumed_result = make_run(tmp_path / "interrupted", num_steps=6)
    assert len(resumed_result["losses"]) == 6
    assert resumed_result["losses"] == straight_result["losses"]  # same batches, same noise
    for a, b in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(straight_result["ema"].model.parameters(),
                    resumed_result["ema"].model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert latest_checkpoint(tmp_path / "interrupted").name == "step-000006"


def test_a_different_seed_gives_a_different_run(tmp_path):
    _, a = make_run(tmp_path / "a", num_steps=2, seed=0)
    _, b = make_run(tmp_path / "b", num_steps=2, seed=1)
    assert a["losses"] != b["losses"]


def test_training_reduces_the_loss(tmp_path):
    _, result = make_run(tmp_path, num_steps=30)
    losses = result["losses"]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def learning_rates(monkeypatch, **train_kwargs):
    """The learning rate of every optimizer step of a short run of the tiny model."""
    lrs, step = [], torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    scheduler = DDPMScheduler(num_train_timesteps=100)
    data = torch.rand(8, 3, 8, 8) * 2 - 1
    train(TinyDenoiser(), lambda m, b, g: diffusion_loss(m, scheduler, b, g), data, batch_size=4,
          lr=1e-2, progress=False, **train_kwargs)
    return lrs


def test_cosine_lr_warms_up_then_falls_to_zero_over_the_steps(monkeypatch):
    lrs = learning_rates(monkeypatch, num_steps=24, warmup_steps=4, lr_schedule="cosine")
    assert lrs[:5] == pytest.approx([2.5e-3, 5e-3, 7.5e-3, 1e-2, 1e-2])
    after_warmup = lrs[4:]
    assert all(a >= b for a, b in zip(after_warmup, after_warmup[1:], strict=False))
    assert lrs[14] == pytest.approx(0.5 * 1e-2)  # halfway through the 20 steps after warm-up
    assert lrs[-1] < 1e-4


def test_cosine_lr_follows_the_clock_when_the_time_budget_ends_first(monkeypatch):
    lrs = learning_rates(monkeypatch, num_steps=10**7, max_seconds=0.5, lr_schedule="cosine")
    assert len(lrs) > 20 and lrs[0] == pytest.approx(1e-2)
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[-1] < 0.05 * 1e-2  # the run ends at (nearly) lr 0, whatever its speed


def test_constant_lr_is_the_default_and_unknown_schedules_are_refused(monkeypatch):
    assert set(learning_rates(monkeypatch, num_steps=6)) == {1e-2}
    with pytest.raises(ValueError, match="'constant' or 'cosine'"):
        learning_rates(monkeypatch, num_steps=2, lr_schedule="linear")


def test_ema_moves_towards_the_model_with_warmup():
    model = torch.nn.Linear(2, 2)
    ema = EMA(model, decay=0.99)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # first update: d = min(0.99, 2/11)
    d = 2 / 11
    expected = d * (model.weight - 1.0) + (1 - d) * model.weight
    torch.testing.assert_close(ema.model.weight, expected)


def test_targets_match_diffusers_training_targets():
    x0, noise = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0, 10, 500, 999])
    for kind in ("epsilon", "v_prediction", "sample"):
        ours = DDPMScheduler(prediction_type=kind)
        theirs = DiffusersDDPM(prediction_type=kind)
        expected = {"epsilon": noise, "sample": x0,
                    "v_prediction": theirs.get_velocity(x0, noise, t)}[kind]
        torch.testing.assert_close(target_for(ours, x0, noise, t), expected)


def test_min_snr_weighting_without_clipping_is_the_plain_loss():
    """γ = ∞ makes every ε weight SNR/SNR = 1: the same draws and the same number as
    weighting=None."""
    torch.manual_seed(0)
    model, scheduler = TinyDenoiser(), DDPMScheduler(beta_schedule="squaredcos_cap_v2")
    x0 = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = diffusion_loss(model, scheduler, x0, torch.Generator().manual_seed(1))
        weighted = diffusion_loss(model, scheduler, x0, torch.Generator().manual_seed(1),
                                  weighting="min_snr", snr_gamma=float("inf"))
    assert torch.allclose(plain, weighted, rtol=1e-5)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_min_snr_loss_is_each_images_mse_times_its_weight(prediction_type):
    torch.manual_seed(0)
    model = TinyDenoiser()
    scheduler = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type=prediction_type)
    x0 = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = diffusion_loss(model, scheduler, x0, torch.Generator().manual_seed(2),
                              weighting="min_snr", snr_gamma=5.0)
        generator = torch.Generator().manual_seed(2)  # the same draws, in the same order
        noise = torch.randn(x0.shape, generator=generator)
        t = sample_timesteps(6, scheduler.config.num_train_timesteps, generator)
        error = model(scheduler.add_noise(x0, noise, t), t).sample - target_for(scheduler, x0,
                                                                                 noise, t)
        expected = (min_snr_weights(scheduler, t, 5.0) * error.pow(2).mean((1, 2, 3))).mean()
    torch.testing.assert_close(ours, expected)


def test_unknown_weighting_is_refused_with_the_choices():
    model, scheduler = TinyDenoiser(), DDPMScheduler(num_train_timesteps=100)
    with pytest.raises(ValueError, match="'min_snr'"):
        diffusion_loss(model, scheduler, torch.zeros(2, 3, 8, 8), torch.Generator(),
                       weighting="snr")
