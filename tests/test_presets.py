"""`--cfg` presets: the auto formulas reproduce upstream's derived table; overrides win; bad combinations fail clearly."""
import json

import pytest

from stylegan2.presets import PRESETS, ConfigError, discriminator_kwargs, resolve_config

# StyleGAN2-ADA's --cfg auto formulas; the values match StyleGAN3 docs/configs.md:
# (res, gpus, batch, gamma, ema kimg, channel_base, lr)
AUTO_TABLE = [
    (1024, 1, 4, 52.4288, 1.25, 32768, 0.002),
    (1024, 2, 8, 26.2144, 2.5, 32768, 0.002),
    (1024, 4, 16, 13.1072, 5, 32768, 0.002),
    (1024, 8, 32, 6.5536, 10, 32768, 0.002),
    (512, 1, 8, 6.5536, 2.5, 32768, 0.0025),
    (512, 8, 64, 0.8192, 20, 32768, 0.0025),
    (256, 1, 16, 0.8192, 5, 16384, 0.0025),
    (256, 8, 64, 0.2048, 20, 16384, 0.0025),
    (128, 1, 32, 0.1024, 10, 16384, 0.0025),
    (64, 1, 32, 0.0256, 10, 16384, 0.0025),
]


@pytest.mark.parametrize("res,gpus,batch,gamma,ema,cbase,lr", AUTO_TABLE)
def test_auto_reproduces_upstream_derived_table(res, gpus, batch, gamma, ema, cbase, lr):
    o = resolve_config("auto", res, gpus)
    assert o["batch"] == batch
    assert o["gamma"] == pytest.approx(gamma, rel=1e-12)
    assert o["ema_kimg"] == pytest.approx(ema)
    assert o["cbase"] == cbase and o["glr"] == o["dlr"] == lr
    assert o["batch_gpu"] == batch // gpus and o["map"] == 2 and o["ema_rampup"] == 0.05
    assert o["mbstd_group"] == min(batch // gpus, 4)


@pytest.mark.parametrize("cfg,batch,mbstd,cbase,lr,gamma,ema", [
    ("stylegan2", 32, 4, 32768, 0.002, 10, 10),
    ("paper256", 64, 8, 16384, 0.0025, 1, 20),
    ("paper512", 64, 8, 32768, 0.0025, 0.5, 20),
    ("paper1024", 32, 4, 32768, 0.002, 2, 10),
])
def test_paper_presets_carry_upstream_values_and_accumulate_on_fewer_gpus(cfg, batch, mbstd, cbase, lr, gamma, ema):
    o = resolve_config(cfg, 256, 2)
    assert (o["batch"], o["mbstd_group"], o["cbase"], o["glr"], o["gamma"], o["ema_kimg"]) == \
        (batch, mbstd, cbase, lr, gamma, ema)
    assert o["map"] == 8 and o["ema_rampup"] is None
    assert o["batch_gpu"] == batch // 8                       # tuned for 8 GPUs: 2 GPUs accumulate 4 rounds
    assert o["batch"] // (o["batch_gpu"] * o["gpus"]) == 4


def test_audio1024_is_the_thesis_configuration():
    o = resolve_config("audio1024", 1024, 1)
    assert o["glr"] == o["dlr"] == 0.001 and o["gamma"] == 10
    assert o["aug"] == "noaug" and o["mirror"] is False
    assert o["cbase"] == 32768 and o["map"] == 8 and o["ema_kimg"] == 10 and o["batch"] == 32
    assert o["batch_gpu"] == 4 and o["num_fp16_res"] == 4 and o["conv_clamp"] == 256


def test_overrides_beat_the_preset_and_none_means_not_given():
    o = resolve_config("audio1024", 1024, 1, lr=0.002, gamma=5, batch=16, batch_gpu=8, kimg=0.5, map=2,
                       cbase=16384, cmax=256, mirror=None, fp32=True)
    assert (o["glr"], o["dlr"], o["gamma"], o["batch"], o["batch_gpu"], o["kimg"], o["map"]) == \
        (0.002, 0.002, 5, 16, 8, 0.5, 2)
    assert o["cbase"] == 16384 and o["cmax"] == 256 and o["mirror"] is False
    assert o["num_fp16_res"] == 0 and o["conv_clamp"] is None         # --fp32
    assert resolve_config("audio1024", 1024, 1, glr=0.003)["glr"] == 0.003


def test_auto_formulas_follow_an_overridden_batch():
    o = resolve_config("auto", 256, 1, batch=32)
    assert o["gamma"] == pytest.approx(0.0002 * 256 ** 2 / 32) and o["ema_kimg"] == 10 and o["batch_gpu"] == 32


def test_resolved_options_are_json_serialisable():
    for cfg in PRESETS:
        o = resolve_config(cfg, 32 if cfg == "tiny" else 256, 1)
        assert json.loads(json.dumps(o)) == o


@pytest.mark.parametrize("kwargs,message", [
    (dict(cfg="nope", resolution=64, gpus=1), "unknown --cfg 'nope'"),
    (dict(cfg="auto", resolution=48, gpus=1), "power of two"),
    (dict(cfg="stylegan2", resolution=64, gpus=3), "--batch 32 is not divisible by --gpus 3"),
    (dict(cfg="stylegan2", resolution=64, gpus=1, batch_gpu=12), "not divisible by --gpus 1 x --batch-gpu 12"),
    (dict(cfg="stylegan2", resolution=64, gpus=1, batch_gpu=2, mbstd_group=4),
     "smaller than the minibatch-stddev group 4"),
    (dict(cfg="stylegan2", resolution=64, gpus=2, batch_gpu=32), "larger than --batch 32 / --gpus 2"),
    (dict(cfg="auto", resolution=64, gpus=1, aug="fixed"), "--aug fixed needs --p"),
    (dict(cfg="auto", resolution=64, gpus=1, p=0.2), "--p only applies to --aug fixed"),
    (dict(cfg="auto", resolution=64, gpus=1, aug="always"), "--aug must be one of"),
    (dict(cfg="auto", resolution=64, gpus=1, lr=-1), "--glr must be a positive number"),
    (dict(cfg="auto", resolution=64, gpus=1, gamma=-1), "--gamma must be >= 0"),
    (dict(cfg="auto", resolution=64, gpus=1, bogus=3), "unknown option(s) bogus"),
    (dict(cfg="auto", resolution=64, gpus=1, augpipe="bgc"), "--augpipe must be one of audio"),
    (dict(cfg="auto", resolution=64, gpus=1, keep_best="fid50k_full"), "--keep-best fid50k_full is not among --metrics"),
    (dict(cfg="auto", resolution=64, gpus=1, patience=10), "--patience needs --keep-best"),
    (dict(cfg="auto", resolution=64, gpus=1, metrics=["sfd1k"], keep_best="sfd1k", patience=0),
     "--patience must be a positive number of kimg"),
    (dict(cfg="tiny", resolution=32, gpus=1, batch_gpu=6, batch=12, mbstd_group=4),
     "not divisible by the minibatch-stddev group 4"),
    (dict(cfg="auto", resolution=64, gpus=1, freezed=-1), "--freezed must be an integer >= 0"),
    (dict(cfg="auto", resolution=64, gpus=1, allow_tf32="yes"), "--allow-tf32 must be true or false"),
])
def test_invalid_combinations_raise_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError) as info:
        resolve_config(kwargs.pop("cfg"), kwargs.pop("resolution"), kwargs.pop("gpus"), **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_tiny_preset_is_cpu_sized():
    o = resolve_config("tiny", 32, 1)
    assert o["fp32"] and o["num_fp16_res"] == 0 and o["cmax"] <= 64 and o["z_dim"] <= 128
    assert o["batch"] <= 8 and o["map"] == 2


def test_backend_and_freeze_d_options_default_off_and_reach_the_discriminator_kwargs():
    o = resolve_config("audio1024", 1024, 1)
    assert (o["allow_tf32"], o["nobench"], o["freezed"]) == (False, False, 0)      # upstream defaults
    assert "block_kwargs" not in discriminator_kwargs(o, 0, 1)
    o = resolve_config("audio1024", 1024, 1, allow_tf32=True, nobench=True, freezed=10)
    assert (o["allow_tf32"], o["nobench"], o["freezed"]) == (True, True, 10)
    assert discriminator_kwargs(o, 0, 1)["block_kwargs"] == {"freeze_layers": 10}


def test_cpu128_preset_is_the_shipped_networks_command_line():
    """--cfg cpu128 = --cfg tiny --cbase 2048 --cmax 128 --batch-gpu 8 --kimg 1000 --tick 0.5 (electro128)."""
    o = resolve_config("cpu128", 128, 1)
    flags = resolve_config("tiny", 128, 1, cbase=2048, cmax=128, batch_gpu=8, kimg=1000, tick=0.5)
    same = lambda d: {k: v for k, v in d.items() if k not in ("cfg", "ref_gpus")}   # noqa: E731
    assert same(o) == same(flags)
    from stylegan2.networks import Generator
    from stylegan2.presets import generator_kwargs
    G = Generator(**generator_kwargs(o, 0, 1))
    assert sum(p.numel() for p in G.parameters()) == 989_857
