"""``spoken-digits``: isolated spoken digits on held-out voices, word error rate per model.

Data (:func:`rnnlab.tasks.speech.spoken_digits`): the ten English digit words synthesised
offline by eSpeak NG in ``--voices`` voice variants (drawn per seed from those the installed
data holds), ``--repeats`` times each at random pitch and rate; ``--test-voices`` of the
variants are held out of training. Front end: Lyon's passive-ear cochleagram (64 channels at
8 kHz, 100 frames/s), each utterance scaled to a peak of 1.

Models, each read out by ridge regression onto one-hot digit codes (argmax):

* ``static``: no dynamics, a linear classifier on static spectral features
  (:func:`rnnlab.tasks.speech.static_features`: log mean energy in ``--bands`` channel bands
  over ``--segments`` equal time segments of the word), standardised on the training set;
* ``ESN``: an echo state network (leaky tanh units) driven by the cochleagram frames, its
  states averaged over the word (``RidgeClassifierReadout(pooling="mean")``);
* ``LSM``: the liquid of Maass, Natschlaeger & Markram 2002 (:mod:`rnnlab.reservoir.lsm`, the
  paper's 15 x 3 x 3 column) driven by BSA spike trains of the cochleagram (one spike step per
  ``--spike-upsample`` of a frame, placed on the liquid's ``--lsm-dt`` grid), each input
  channel reaching a neuron with probability ``--lsm-input-probability``; its liquid state
  (spikes filtered with tau = 30 ms) is sampled at every frame and averaged over the word.

The word error rate of isolated words is the fraction misrecognised. Literature anchor:
Verstraeten, Schrauwen, Stroobandt & Van Campenhout (2005), "Isolated word recognition with the
Liquid State Machine: a case study", Information Processing Letters 95(6): an LSM on a Lyon
cochleagram with BSA spike coding, on a subset of TI46 (recorded digits of human speakers). Our
numbers are not comparable with theirs: synthetic formant speech is far less variable than
recorded voices (a voice variant changes formant scales and pitch, not accent, timing habits or
recording conditions), the speaker split, vocabulary size and number of utterances differ, and
our hyperparameters are defaults, not tuned per model.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from rnnlab.experiments.registry import (
    ExperimentResult,
    RunContext,
    SeededOptions,
    aggregate,
    format_mean_std,
    option,
    register,
)
from rnnlab.reservoir.esn import EchoStateNetwork
from rnnlab.reservoir.readout import RidgeClassifierReadout, RidgeReadout
from rnnlab.tasks.speech import (
    N_CLASSES,
    SpokenDigits,
    spoken_digits,
    static_features,
    voice_variants,
    word_error_rate,
)

MODELS = ("static", "ESN", "LSM")


@dataclass
class SpokenDigitsConfig(SeededOptions):
    models: tuple[str, ...] = option(MODELS, "models to score: static (ridge on static spectral "
                                     "features), ESN, LSM", choices=MODELS, unique=True,
                                     item="model")
    seeds: int = option(2, "seeds: seed, seed + 1, ... (voices drawn, split, pitch, rate, "
                        "reservoir)", low=1)
    voices: int = option(40, "voice variants used per seed (drawn from the installed data)",
                         low=3)
    test_voices: int = option(10, "voices held out of training", low=1)
    repeats: int = option(2, "utterances of each digit per voice", low=1)
    sample_rate: int = option(8000, "audio sample rate (Hz)", low=4000)
    decimation: int = option(80, "cochleagram frames every this many samples", low=1)
    segments: int = option(3, "static features: time segments per word", low=1)
    bands: int = option(16, "static features: channel bands", low=1)
    static_ridge: float = option(1.0, "ridge penalty of the static baseline (standardised "
                                 "features)", low=0)
    units: int = option(200, "ESN units", low=1)
    spectral_radius: float = option(0.9, "ESN spectral radius", low=0, low_open=True)
    leak: float = option(0.1, "ESN leak rate", low=0, high=1, low_open=True)
    input_scaling: float = option(1.0, "ESN input weights uniform in [-s, s]", low=0,
                                  low_open=True)
    esn_ridge: float = option(1e-2, "ridge penalty of the ESN readout", low=0)
    spike_upsample: int = option(10, "LSM: BSA spike steps per cochleagram frame", low=1)
    lsm_dt: float = option(0.5, "LSM: time step (ms); must divide the spike step", low=0,
                           low_open=True)
    lsm_input_probability: float = option(0.1, "LSM: probability that an input channel "
                                          "reaches a neuron", low=0, high=1, low_open=True)
    lsm_tau: float = option(30.0, "LSM: liquid-state filter time constant (ms)", low=0,
                            low_open=True)
    lsm_ridge: float = option(1e-2, "ridge penalty of the LSM readout", low=0)
    lsm_batch: int = option(100, "LSM: words simulated at once", low=1)

    def validate(self) -> None:
        if self.test_voices >= self.voices:
            raise ValueError(f"test-voices ({self.test_voices}) must be fewer than voices "
                             f"({self.voices})")
        ratio = self.spike_step_ms() / self.lsm_dt
        if abs(ratio - round(ratio)) > 1e-9 * ratio:
            raise ValueError(f"lsm-dt ({self.lsm_dt} ms) must divide the spike step "
                             f"({self.spike_step_ms():g} ms = 1000 * decimation / sample-rate "
                             f"/ spike-upsample)")

    def spike_step_ms(self) -> float:
        return 1000.0 * self.decimation / self.sample_rate / self.spike_upsample


def _data(cfg: SpokenDigitsConfig, seed: int) -> tuple[SpokenDigits, SpokenDigits]:
    gen = torch.Generator().manual_seed(seed)
    names = voice_variants()
    if cfg.voices > len(names):
        raise ValueError(f"voices ({cfg.voices}) exceeds the {len(names)} variants installed")
    chosen = [names[i] for i in torch.randperm(len(names), generator=gen)[:cfg.voices]]
    return spoken_digits(voices=chosen, n_test_voices=cfg.test_voices, repeats=cfg.repeats,
                         sample_rate=cfg.sample_rate, decimation=cfg.decimation,
                         spikes="LSM" in cfg.models, spike_upsample=cfg.spike_upsample,
                         generator=gen, dtype=torch.float64)


def score_static(cfg: SpokenDigitsConfig, train: SpokenDigits, test: SpokenDigits) -> float:
    """WER of ridge regression on standardised static features (train statistics)."""
    x = static_features(train.inputs, train.lengths, segments=cfg.segments, bands=cfg.bands)
    xt = static_features(test.inputs, test.lengths, segments=cfg.segments, bands=cfg.bands)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-12)
    ridge = RidgeReadout(x.shape[1], N_CLASSES, alpha=cfg.static_ridge, dtype=torch.float64)
    ridge.fit((x - mean) / std,
              torch.nn.functional.one_hot(train.labels, N_CLASSES).to(torch.float64))
    return word_error_rate(ridge.predict((xt - mean) / std).argmax(-1), test.labels)


def score_esn(cfg: SpokenDigitsConfig, train: SpokenDigits, test: SpokenDigits,
              seed: int) -> float:
    """WER of an ESN driven by the cochleagram, mean state over each word, ridge readout."""
    esn = EchoStateNetwork(input_size=train.inputs.shape[2], units=cfg.units,
                           spectral_radius=cfg.spectral_radius, leak=cfg.leak,
                           input_scaling=cfg.input_scaling, seed=seed, dtype=torch.float64)
    readout = RidgeClassifierReadout(cfg.units, N_CLASSES, alpha=cfg.esn_ridge, pooling="mean",
                                     dtype=torch.float64)
    with torch.no_grad():
        readout.fit(esn.states(train.inputs), train.labels, train.lengths)
        predicted = readout.predict(esn.states(test.inputs), test.lengths)
    return word_error_rate(predicted, test.labels)


def lsm_features(cfg: SpokenDigitsConfig, liquid: Any, data: SpokenDigits,
                 seed: int) -> torch.Tensor:
    """Liquid states ``(batch, frames, N)`` at the end of every frame, words simulated in
    batches of ``cfg.lsm_batch`` (the spike trains spread onto the liquid's time grid)."""
    from rnnlab.reservoir.lsm import liquid_states

    assert data.spikes is not None
    spread = round(cfg.spike_step_ms() / cfg.lsm_dt)
    frame_ms = 1000.0 / data.frame_rate
    times = [(k + 1) * frame_ms for k in range(data.inputs.shape[1])]
    out = []
    for start in range(0, len(data), cfg.lsm_batch):
        trains = data.spikes[start:start + cfg.lsm_batch].to(torch.float32)
        grid = torch.zeros(trains.shape[0], trains.shape[1] * spread, trains.shape[2])
        grid[:, ::spread] = trains
        spikes = liquid(grid, seed=seed + start).spikes
        out.append(liquid_states(spikes, cfg.lsm_dt, times, tau=cfg.lsm_tau).double())
    return torch.cat(out)


def score_lsm(cfg: SpokenDigitsConfig, train: SpokenDigits, test: SpokenDigits,
              seed: int) -> float:
    """WER of the liquid driven by BSA spike trains, mean liquid state over each word, ridge
    readout."""
    from rnnlab.reservoir.lsm import ColumnParameters, LiquidColumn, build_column

    column = build_column(ColumnParameters(input_probability=cfg.lsm_input_probability),
                          n_inputs=train.inputs.shape[2], seed=seed)
    liquid = LiquidColumn(column, dt=cfg.lsm_dt)
    with torch.no_grad():
        x = lsm_features(cfg, liquid, train, seed)
        xt = lsm_features(cfg, liquid, test, seed + len(train))
        readout = RidgeClassifierReadout(x.shape[2], N_CLASSES, alpha=cfg.lsm_ridge,
                                         pooling="mean", dtype=torch.float64)
        readout.fit(x, train.labels, train.lengths)
        predicted = readout.predict(xt, test.lengths)
    return word_error_rate(predicted, test.labels)


SCORERS = {"ESN": score_esn, "LSM": score_lsm}


def run_seed(cfg: SpokenDigitsConfig, seed: int) -> list[dict[str, Any]]:
    """One seed: the data, then every model's WER on the held-out voices."""
    start = time.perf_counter()
    train, test = _data(cfg, seed)
    data_s = time.perf_counter() - start
    rows = []
    for model in cfg.models:
        start = time.perf_counter()
        wer = score_static(cfg, train, test) if model == "static" else SCORERS[model](
            cfg, train, test, seed)
        rows.append({"model": model, "seed": seed, "wer": wer, "train_words": len(train),
                     "test_words": len(test), "fit_s": time.perf_counter() - start,
                     "data_s": data_s})
    return rows


@register("spoken-digits",
          "spoken digits (eSpeak NG voices, Lyon cochleagram): WER of static ridge, ESN and LSM "
          "on held-out voices", SpokenDigitsConfig)
def run(cfg: SpokenDigitsConfig, ctx: RunContext) -> ExperimentResult:
    import matplotlib.pyplot as plt

    rows: list[dict[str, Any]] = []
    with ctx.progress("seeds", cfg.seeds) as advance:
        for seed in ctx.seeds(cfg):
            for row in run_seed(cfg, seed):
                ctx.log_metrics(row)
                rows.append(row)
            advance(1)
    table = aggregate(rows, ["model"], ["wer"], count="seeds", groups=[(m,) for m in cfg.models])
    for row in table:
        row["train_words"] = rows[0]["train_words"]
        row["test_words"] = rows[0]["test_words"]

    fig, (ax_gram, ax_wer) = plt.subplots(1, 2, figsize=(11, 4))
    example = _example(cfg)
    ax_gram.imshow(example.inputs[0, :int(example.lengths[0])].T.numpy(), aspect="auto",
                   origin="lower", cmap="magma")
    ax_gram.set_title(f"cochleagram: '{example.labels[0].item()}' ({example.voices[0]})")
    ax_gram.set_xlabel(f"frame ({example.frame_rate:g}/s)")
    ax_gram.set_ylabel("channel (0 = highest frequency)")
    ax_wer.bar([r["model"] for r in table], [r["wer"] for r in table],
               yerr=[0.0 if math.isnan(r["wer_std"]) else r["wer_std"] for r in table],
               capsize=4)
    ax_wer.set_ylabel("word error rate (held-out voices)")
    ax_wer.set_title(f"{cfg.voices - cfg.test_voices} train / {cfg.test_voices} test voices")
    plot = ctx.save_figure(fig, "spoken_digits")
    summary = "; ".join(f"{r['model']}: WER {format_mean_std(r['wer'], r['wer_std'], 3)}"
                        for r in table)
    return ExperimentResult(
        title="spoken-digits: word error rate on held-out voices", rows=table, plots=[plot],
        summary=summary + ". Not comparable with Verstraeten et al. 2005 (TI46, recorded "
        "speech): see docs/speech.md.",
        figures={f"wer_{r['model']}": r["wer"] for r in table},
    )


def _example(cfg: SpokenDigitsConfig) -> SpokenDigits:
    """One utterance (digit 7, the first installed variant) for the figure."""
    train, _ = spoken_digits(voices=voice_variants()[:2], n_test_voices=1, repeats=1,
                             digits=[7], sample_rate=cfg.sample_rate,
                             decimation=cfg.decimation, seed=0)
    return train
