"""Training a batch of runs as one stacked model.

Runs that share an architecture, data shapes, step count, optimiser kind, batch size and precision
train together; each keeps its own σ per layer, noise kind, mode, learning rate, seed and random
streams, so a run gives the same result alone or in any batch. The three modes, from identical
initial weights for a given seed:

- ``baseline``: the clean loss;
- ``gni``: the loss of the noisy forward pass, averaged over ``noise_samples`` draws;
- ``explicit``: the clean loss + R (trained through R by differentiating its vector–Jacobian products).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gni_engine import __version__
from gni_engine.counter_noise import FUSED_ACTIVATIONS, CounterNoiseSampler, CounterStreams
from gni_engine.data import Dataset, build_dataset
from gni_engine.errors import DivergenceError, SpecError
from gni_engine.explicit_gradient import explicit_objective, hand_gradient_applies
from gni_engine.heap import keep_freed_memory
from gni_engine.kernel_choice import (
    choose_adam_kernel,
    choose_counter_kernels,
    choose_fused_linear,
    wants_step_graph,
)
from gni_engine.losses import run_losses
from gni_engine.networks import build_network
from gni_engine.noise import NoisePlan, NoiseSampler, NoiseScales
from gni_engine.optim import StackedOptimiser
from gni_engine.provenance import cpu_model, software_facts
from gni_engine.recording import LossRecorder, MetricRow, RecordContext, Recorder, RegulariserRecorder
from gni_engine.regulariser import stacked_noise_gap, stacked_regulariser
from gni_engine.seeding import derive_seed, make_generator
from gni_engine.spec import RunSpec
from gni_engine.stacked import Activate, Finish, Perturb, StackedMLP, StackedNetwork, stack_networks
from gni_engine.step_graph import StepGraph

SETTLE_EVERY = 16  # on a GPU, steps between reads of the divergence flags (the failing step stays exact)
DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.float32, "fp64": torch.float64}


@dataclass
class RunState:
    """What training produced for one run of a batch."""

    spec: RunSpec
    status: str = "running"  # running → succeeded | failed | cancelled
    error: str | None = None
    failed_step: int | None = None
    metrics: list[MetricRow] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, torch.Tensor] = field(default_factory=dict)


class BatchCallbacks:
    """Hooks a caller may override; indices are positions in the batch."""

    def on_progress(self, index: int, step: int, total: int) -> None:
        """Called every few steps."""

    def on_metrics(self, index: int, rows: Sequence[MetricRow]) -> None:
        """Called with each record step's rows."""

    def should_cancel(self, index: int) -> bool:
        """Polled between steps."""
        return False


def batch_key(spec: RunSpec) -> str:
    """Runs with equal keys can share one stacked computation."""
    t = spec.training
    samples = t.noise_samples if t.mode == "gni" else 1
    return "|".join(
        [
            spec.task,
            spec.data.model_dump_json(exclude={"phases", "amplitudes", "frequencies"}),  # shapes only
            spec.model.model_dump_json(),
            f"{t.optimizer}/{t.batch_size}/{t.steps}/{samples}/{t.regulariser}",
            spec.analyses.model_dump_json(),
            spec.execution.model_dump_json(exclude={"max_batch_runs"}),
        ]
    )


def resolve_device(spec: RunSpec) -> torch.device:
    wanted = spec.execution.device
    if wanted == "cuda" and not torch.cuda.is_available():
        raise SpecError("execution.device: 'cuda' requested but no CUDA device is available")
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(wanted)


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """TF32 matmuls and convolutions on CUDA for ``tf32`` only, whatever the process default is.

    Training's backward passes run inside it too: a tf32 run's gradients are TF32 products, and an
    fp32 run's are full fp32 even where the environment turned TF32 on for the whole process.
    """
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    torch.backends.cudnn.allow_tf32 = precision == "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


@contextlib.contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Forward passes: :func:`matmul_precision`, and for bf16 autocast to bfloat16; fp32/fp64: plain."""
    with matmul_precision(precision):
        if precision == "bf16":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield


def _stack_data(tensors: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """(E, N, …): a shared view when every run has the very same tensor, a stacked copy otherwise."""
    first = tensors[0]
    if all(t is first for t in tensors):
        return first.to(device).unsqueeze(0).expand(len(tensors), *first.shape)
    return torch.stack([t.to(device) for t in tensors])


def _zero_runs(grad: torch.Tensor, failed: torch.Tensor) -> torch.Tensor:
    """``grad`` (E, …) with the runs flagged in ``failed`` (E,) set to 0, in place on a dense copy
    (the optimiser reads it dense anyway): a gradient of this step's, which nothing else holds, is
    read and written once instead of copied, filled and then made contiguous."""
    dense = grad.contiguous()
    return dense.masked_fill_(failed.reshape((-1,) + (1,) * (dense.dim() - 1)), 0.0)


class BatchTrainer:
    """Trains runs that share a :func:`batch_key` as one stacked network."""

    def __init__(
        self,
        specs: Sequence[RunSpec],
        *,
        callbacks: BatchCallbacks | None = None,
        recorders: Sequence[Recorder] | None = None,
        dataset_loader: Callable[[RunSpec, torch.dtype], Dataset] | None = None,
        noise_stream: str = "auto",
        fused_gemm: str | None = None,
        cuda_graph: str | None = None,
        adam_kernel: str | None = None,
    ) -> None:
        """``noise_stream``: where training noise comes from. ``"generator"``: each run's
        ``torch.Generator`` (one draw per run and pass); ``"counter"``: counter-based Philox streams
        (:mod:`gni_engine.counter_noise`), drawn by one compiled kernel for all runs (C on the CPU,
        Triton on a GPU; the torch definition where neither works); ``"counter-reference"``: the same
        streams computed by the torch definition (slow; the tests' yardstick); ``"auto"``: counter
        where a compiled kernel works (MLPs, not bf16), generator otherwise. The environment variable
        ``GNI_NOISE_STREAM`` overrides ``"auto"`` (for benchmarks).

        ``fused_gemm``: ``"on"`` computes each hidden layer of an MLP trained with counter noise as one
        Triton GEMM with bias, activation and noise in its epilogue (:mod:`gni_engine.fused_linear_triton`;
        CUDA, or Triton's CPU interpreter in the tests), in the run's precision; ``"tf32x3"`` does so
        with an fp32 run's products computed as three TF32 tensor-core products of split operands
        (about fp32's accuracy); ``"fold"`` keeps cuBLAS's products and folds the rest into the
        activation kernels (:mod:`gni_engine.folded_activation_triton`: a one-input first layer, a
        one-output last layer, every bias gradient); ``"off"`` keeps cuBLAS with the fused
        activation kernel; ``"auto"`` (the default) folds where the folded kernels compute the batch
        on CUDA (on an H200 they ran the reference sweep 1.17× faster in TF32 and 1.08× in fp32;
        the fused GEMM ran at half cuBLAS's speed), else ``"off"``. ``None`` reads
        ``GNI_FUSED_GEMM`` (default ``auto``). Results record the choice as
        ``hidden_layer_kernel``.

        ``cuda_graph``: ``"on"`` captures the training step as a CUDA graph after a few eager steps
        and replays it (:mod:`gni_engine.step_graph`; full-batch training with counter or no noise,
        on CUDA); ``"off"`` (the default until measured) runs every step eagerly. ``None`` reads
        ``GNI_CUDA_GRAPH``. Results record the steps replayed as ``graph_replayed_steps``.

        ``adam_kernel``: ``"triton"`` updates Adam runs with one Triton kernel that takes a learning
        rate per run and skips failed runs on the device (:mod:`gni_engine.stacked_adam_triton`;
        CUDA, or the interpreter in the tests); ``"torch"`` with PyTorch's fused Adam; ``"auto"``
        (the default) with the kernel on CUDA. ``None`` reads ``GNI_ADAM_KERNEL``. Results record the
        choice as ``optimiser_kernel``."""
        if not specs:
            raise ValueError("a batch needs at least one run")
        keys = {batch_key(s) for s in specs}
        if len(keys) > 1:
            raise ValueError("runs of one batch must share architecture, data shape, steps and optimiser")
        self.specs = list(specs)
        self.callbacks = callbacks or BatchCallbacks()
        self.first = specs[0]
        self.device = resolve_device(self.first)
        if self.device.type == "cpu":
            keep_freed_memory()  # reuse freed pages: a stacked step would otherwise fault in ~14 MiB
        self.precision = self.first.execution.precision
        self.dtype = DTYPES[self.precision]
        self.loss = self.first.loss
        self.recorders: list[Recorder] = list(recorders) if recorders is not None else default_recorders()
        load = dataset_loader or (lambda s, d: build_dataset(s, dtype=d))
        self.datasets = self._load_datasets(load)
        self.states = [RunState(s) for s in self.specs]
        self._build(noise_stream, fused_gemm, adam_kernel)
        self.step_graph = (
            StepGraph(lambda: self._step_work(graphed=True), self._graph_tensors)
            if wants_step_graph(self, cuda_graph)
            else None
        )

    # ------------------------------------------------------------------------------------ set-up
    def _load_datasets(self, load: Callable[[RunSpec, torch.dtype], Dataset]) -> list[Dataset]:
        cache: dict[str, Dataset] = {}
        out = []
        for s in self.specs:
            key = f"{s.task}|{s.data.model_dump_json()}|{s.effective_data_seed}"
            if key not in cache:
                cache[key] = load(s, self.dtype)
            out.append(cache[key])
        shapes = {(d.x_train.shape, d.x_test.shape, d.n_outputs) for d in out}
        if len(shapes) > 1:
            raise ValueError(f"runs of one batch have different data shapes: {sorted(map(str, shapes))}")
        return out

    def _build(self, noise_stream: str, fused_gemm: str | None, adam_kernel: str | None) -> None:
        e = len(self.specs)
        data = self.datasets[0]
        nets = [
            build_network(
                s,
                data.input_shape,
                data.n_outputs,
                generator=make_generator(s.seed, "init"),
                dtype=torch.float64,
            )
            for s in self.specs
        ]
        stacked = stack_networks(nets, requires_grad=False)
        for p in stacked.parameters():
            p.data = p.data.to(device=self.device, dtype=self.dtype)
            p.requires_grad_(True)
        self.net: StackedNetwork = stacked
        self.x_train = _stack_data([d.x_train for d in self.datasets], self.device)
        self.y_train = _stack_data([d.y_train for d in self.datasets], self.device)
        self.x_test = _stack_data([d.x_test for d in self.datasets], self.device)
        self.y_test = _stack_data([d.y_test for d in self.datasets], self.device)
        sigmas = [s.injection_sigmas() for s in self.specs]
        kinds = [s.noise.kind for s in self.specs]
        self.scales = NoiseScales.from_sigmas(sigmas, kinds, dtype=self.dtype, device=self.device)
        modes = [s.training.mode for s in self.specs]
        self.gni_mask = torch.tensor([m == "gni" for m in modes], device=self.device)
        self.explicit_mask = torch.tensor([m == "explicit" for m in modes], device=self.device)
        self.train_scales = self.scales.scaled(self.gni_mask)
        self.train_noise = NoisePlan(self.train_scales, self.net.point_sizes())
        self.needs_noise = self.train_noise.any_noise
        self.needs_r = bool(self.explicit_mask.any())
        # the one-draw estimator draws only for these: a gni run's noise generator must not move for it
        self.explicit_runs: list[bool] = self.explicit_mask.tolist()
        self.r_scales = self.scales.scaled(self.explicit_mask)
        gen_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        self.noise_generators = [make_generator(s.seed, "noise", gen_device) for s in self.specs]
        self.shuffle_generators = [make_generator(s.seed, "shuffle") for s in self.specs]
        self.analysis_generators = [make_generator(s.seed, "analysis", gen_device) for s in self.specs]
        self.counter_kernels = choose_counter_kernels(self, noise_stream)
        self.noise_streams = (
            CounterStreams([derive_seed(s.seed, "noise") for s in self.specs], self.device)
            if self.counter_kernels is not None
            else None
        )
        # hidden layers' bias, activation and noise in one kernel (counter noise, MLPs)
        self.fuse_activation = (
            self.counter_kernels is not None
            and isinstance(self.net, StackedMLP)
            and self.net.activation in FUSED_ACTIVATIONS
        )
        # the fused GEMM and the arithmetic of its products (tf32x3 may replace an fp32 run's)
        self.fused_linear, self.gemm_products = choose_fused_linear(self, fused_gemm)
        lr = torch.tensor([s.training.lr for s in self.specs], dtype=torch.float64, device=self.device)
        momentum = torch.tensor(
            [s.training.momentum for s in self.specs], dtype=torch.float64, device=self.device
        )
        self.optimiser = StackedOptimiser(
            self.net.parameters(),
            kind=self.first.training.optimizer,
            lr=lr,
            momentum=momentum,
            adam_kernel=choose_adam_kernel(self, adam_kernel),
        )
        self.active = torch.ones(e, dtype=torch.bool, device=self.device)
        self.diverged_at = torch.zeros(e, dtype=torch.long, device=self.device)  # 0: has not diverged
        self.step_on_device = torch.zeros((), dtype=torch.long, device=self.device)  # the step being taken
        # reading flags back waits for the device: free on the CPU, a pipeline stall on a GPU
        self.settle_every = 1 if self.device.type == "cpu" else SETTLE_EVERY
        self.step = 0
        self.epoch_order: torch.Tensor | None = None  # (E, N) current epoch's permutation per run
        self.epoch_position = 0
        n_train = self.x_train.shape[1]
        t = self.first.training
        self.batch_size = n_train if t.batch_size is None else min(t.batch_size, n_train)
        # M of the gni runs (batch_key gives them all the same M); a baseline or explicit run's
        # noise_samples is ignored, so it must not set the batch's M when it comes first
        gni_samples = {s.training.noise_samples for s in self.specs if s.training.mode == "gni"}
        self.samples = gni_samples.pop() if gni_samples else 1
        # explicit (and baseline) runs without a noisy forward pass: the hand-written gradient of
        # loss + R takes 4 matrix products per layer where autograd's double backward takes 6
        self.hand_gradient = (
            self.needs_r
            and not self.needs_noise
            and t.regulariser == "exact"
            and self.precision != "bf16"
            and isinstance(self.net, StackedMLP)
            and hand_gradient_applies(self.net, self.loss, self.r_scales)
        )

    @property
    def hidden_layer_kernel(self) -> str:
        """How an MLP's hidden layers are computed in a noisy training pass, as results record it
        (``eager``: ``baddbmm`` and the activation, as in every pass without noise)."""
        if not self.needs_noise:
            return "eager"
        if self.fused_linear is not None:
            label = self.fused_linear.label
            return label if self.gemm_products == self.precision else f"{label}/{self.gemm_products}"
        return "gemm+fused-activation" if self.fuse_activation else "eager"

    @property
    def noise_stream(self) -> str:
        """Which stream the training noise comes from, as results record it."""
        return "torch-generator" if self.counter_kernels is None else self.counter_kernels.label

    # ---------------------------------------------------------------------------------- training
    def _minibatch(self) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.x_train.shape[1]
        if self.batch_size >= n:
            return self.x_train, self.y_train
        if self.epoch_order is None or self.epoch_position + self.batch_size > n:
            self.epoch_order = torch.stack(
                [torch.randperm(n, generator=g) for g in self.shuffle_generators]
            ).to(self.device)
            self.epoch_position = 0
        idx = self.epoch_order[:, self.epoch_position : self.epoch_position + self.batch_size]  # (E, B)
        self.epoch_position += self.batch_size
        rows = torch.arange(idx.shape[0], device=self.device).unsqueeze(1)
        return self.x_train[rows, idx], self.y_train[rows, idx]

    def _objective(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(E,) training objective of each run on one minibatch."""
        if self.samples > 1:
            x = x.repeat(1, self.samples, *([1] * (x.dim() - 2)))
            y = y.repeat(1, self.samples, *([1] * (y.dim() - 2)))
        needs_r, needs_noise = self.needs_r, self.needs_noise
        perturb: Perturb | None = None
        activate: Activate | None = None
        finish: Finish | None = None
        if needs_noise and self.noise_streams is not None and self.counter_kernels is not None:
            counter = CounterNoiseSampler(
                self.train_noise,
                self.noise_streams,
                int(x.shape[1]),
                self.counter_kernels,
                linear=self.fused_linear,
                precision=self.gemm_products,
            )
            perturb = counter.perturb()
            activate = counter.activate() if self.fuse_activation else None
            finish = counter.finish() if self.fuse_activation else None
        elif needs_noise:
            perturb = NoiseSampler(
                self.train_noise, self.noise_generators, n_examples=int(x.shape[1])
            ).perturb()
        with precision_context(self.precision, self.device):
            # autograd's vector–Jacobian products need the input in the graph; the MLP recursion does not
            x_in = x.detach().requires_grad_(True) if needs_r and self.net.point_sizes() is None else x
            fwd = (
                self.net.forward(x_in, perturb, activate, finish)
                if activate is not None and isinstance(self.net, StackedMLP)
                else self.net.forward(x_in, perturb)
            )
            losses = run_losses(self.loss, fwd.output.to(self.dtype), y)
            if needs_r:
                r = stacked_regulariser(
                    self.net,
                    x_in,
                    self.r_scales,
                    self.loss,
                    estimator=self.first.training.regulariser,
                    generators=self.noise_generators,
                    draw=self.explicit_runs,
                    forward=fwd if not needs_noise else None,
                )
                losses = losses + r.sum(1).to(self.dtype)
        return losses

    def train_step(self) -> None:
        """One optimiser step of every run (from the step graph where one is in use)."""
        graph = self.step_graph
        if graph is not None and self.all_running:  # the captured step's masks assume every run runs
            how = graph.run(lambda: self._step_work(graphed=False), self.optimiser.host_state_snapshot)
            if how == "replayed":
                self.optimiser.count_replayed_step()
        else:
            self._step_work(graphed=False)
        self.step += 1
        if self.settle_every > 1 and self.step % self.settle_every == 0:
            self.settle_failures()

    def _step_work(self, *, graphed: bool) -> None:
        """The step's device work. ``graphed``: being captured, so every value that changes from step
        to step is updated in place on the device (a replay repeats the captured arguments)."""
        x, y = self._minibatch()
        grads: Sequence[torch.Tensor] | None = None
        if self.hand_gradient:
            assert isinstance(self.net, StackedMLP)
            with precision_context(self.precision, self.device):
                objective = explicit_objective(self.net, x, y, self.r_scales)
            losses = objective.loss + objective.regulariser.sum(1)
            grads = objective.gradients
        else:
            losses = self._objective(x, y)
        # Divergence is flagged on the device; the host reads the flags in :meth:`settle_failures`.
        # On the CPU that is free, so it reads them at once: the optimiser then leaves a failed run's
        # weights exactly as they were at its last finite step. On a GPU a read stalls the pipeline,
        # so the host reads every ``settle_every`` steps. SGD and the Triton Adam kernel read the flags
        # on the device and leave a failed run exactly as at its last finite step; with PyTorch's
        # fused Adam the failing step is still exact and the failed run's NaN gradients are zeroed,
        # but until the host has read the flags the optimiser keeps moving its weights along its
        # momentum (other runs are never affected).
        if graphed:
            self.step_on_device.add_(1)
        else:
            self.step_on_device.fill_(self.step + 1)
        finite = torch.isfinite(losses.detach())
        self.diverged_at.copy_(torch.where(self.active & ~finite, self.step_on_device, self.diverged_at))
        self.active &= finite
        if self.settle_every == 1:
            self.settle_failures()
        if grads is None:
            total = torch.where(self.active, losses, torch.zeros_like(losses)).sum()
            with matmul_precision(self.precision):
                grads = torch.autograd.grad(total, self.net.parameters())
        all_active = self.all_running
        if all_active and self.settle_every > 1 and not self.optimiser.skips_inactive_runs:
            failed = ~self.active
            grads = [_zero_runs(g, failed) for g in grads]
        self.optimiser.step(grads, self.active, all_active=all_active)

    # -------------------------------------------------------------------------------- step graph
    def _graph_tensors(self) -> list[torch.Tensor]:
        """What a captured step reads or writes in place across steps (a moved one means recapture)."""
        tensors = [*self.net.parameters(), self.x_train, self.y_train, self.active, self.diverged_at]
        tensors += [self.step_on_device, *self.optimiser.device_state()]
        if self.noise_streams is not None:
            tensors += [self.noise_streams.keys, self.noise_streams.base]
        return tensors

    @property
    def all_running(self) -> bool:
        """Host view: no run of the batch has failed (as far as the last settle knows) or been cancelled."""
        return all(state.status == "running" for state in self.states)

    @property
    def any_running(self) -> bool:
        return any(state.status == "running" for state in self.states)

    def settle_failures(self) -> None:
        """Mark the runs whose training loss went non-finite as failed, naming the step (syncs the device)."""
        for e, step in enumerate(self.diverged_at.tolist()):
            if step and self.states[e].status == "running":
                self._fail(e, f"diverged at step {step}: non-finite training loss", step)

    def _fail(self, e: int, message: str, step: int) -> None:
        state = self.states[e]
        state.status, state.error, state.failed_step = "failed", message, step
        self.active[e] = False

    def _poll_cancel(self) -> None:
        """Ask about cancellation (every step on the CPU, every ``settle_every`` steps on a GPU).

        Failures are read first: a run that already diverged is failed, not cancelled, and it is not
        even asked about (an executor's ``should_cancel`` may record the cancellation).
        """
        self.settle_failures()
        for e, state in enumerate(self.states):
            if state.status == "running" and self.callbacks.should_cancel(e):
                state.status = "cancelled"
                state.error = f"cancelled at step {self.step}"
                state.failed_step = self.step  # where it stopped: steps_done
                self.active[e] = False

    # ---------------------------------------------------------------------------------- recording
    def _context(self, final: bool) -> RecordContext:
        cap = self.first.analyses.max_eval_points
        return RecordContext(
            specs=self.specs,
            datasets=self.datasets,
            net=self.net,
            loss=self.loss,
            x_train=self.x_train[:, :cap],
            y_train=self.y_train[:, :cap],
            x_test=self.x_test[:, :cap],
            y_test=self.y_test[:, :cap],
            scales=self.scales,
            generators=self.analysis_generators,
            step=self.step,
            final=final,
        )

    def record(self) -> None:
        with matmul_precision("fp32"):  # analyses in full precision, tf32 runs included
            self._record()

    def _record(self) -> None:
        ctx = self._context(final=False)
        per_run: list[list[MetricRow]] = [[] for _ in self.specs]
        for recorder in self.recorders:
            for e, rows in enumerate(recorder.record(ctx)):
                per_run[e].extend(rows)
        for e, rows in enumerate(per_run):
            if self.states[e].status == "running":
                self.states[e].metrics.extend(rows)
                self.callbacks.on_metrics(e, rows)

    def summarise(self) -> None:
        with matmul_precision("fp32"):
            self._summarise()

    def _summarise(self) -> None:
        ctx = self._context(final=True)
        summaries: list[dict[str, Any]] = [{} for _ in self.specs]
        for recorder in self.recorders:
            for e, entries in enumerate(recorder.summarise(ctx)):
                summaries[e].update(entries)
        gap_samples = self.first.analyses.noise_gap_samples
        if gap_samples > 0:
            mean, stderr = stacked_noise_gap(
                self.net,
                ctx.x_train,
                ctx.y_train,
                self.scales,
                self.loss,
                samples=gap_samples,
                generators=self.analysis_generators,
            )
            for e in range(len(self.specs)):
                summaries[e]["noise_gap"] = float(mean[e])
                summaries[e]["noise_gap_stderr"] = float(stderr[e])
        for e, state in enumerate(self.states):
            state.summary.update(summaries[e])

    # --------------------------------------------------------------------------------------- run
    def run(
        self,
        *,
        checkpoint_every: int = 0,
        on_checkpoint: Callable[[BatchTrainer], None] | None = None,
    ) -> list[RunState]:
        """Train every run to its last step (or failure/cancellation) and summarise them.

        With ``on_checkpoint``, it is called every ``checkpoint_every`` steps (before the last), after
        that step's records: the state it sees is exactly what a resumed trainer continues from.
        """
        start = time.perf_counter()
        total = self.first.training.steps
        every = self.first.analyses.record_every
        progress_every = max(1, total // 100)
        if self.step == 0:
            self.record()
        while self.step < total and self.any_running:
            if self.step % self.settle_every == 0:
                self._poll_cancel()
                if not self.any_running:
                    break
            self.train_step()
            if self.step % every == 0 or self.step == total:
                self.settle_failures()
                self.record()
            if self.step % progress_every == 0 or self.step == total:
                self.settle_failures()
                for e, state in enumerate(self.states):
                    if state.status == "running":
                        self.callbacks.on_progress(e, self.step, total)
            if on_checkpoint is not None and checkpoint_every > 0 and self.step < total:
                if self.step % checkpoint_every == 0:
                    self.settle_failures()
                    if self.any_running:
                        on_checkpoint(self)
        self.settle_failures()
        self.summarise()
        wall = time.perf_counter() - start
        for e, state in enumerate(self.states):
            if state.status == "running":
                state.status = "succeeded"
            state.weights = self.net.unstack(e)
            state.summary.update(
                {
                    "steps_done": self.step if state.failed_step is None else state.failed_step,
                    "device": str(self.device),
                    "device_name": device_name(self.device),
                    "precision": self.precision,
                    "noise_stream": self.noise_stream,
                    "hidden_layer_kernel": self.hidden_layer_kernel,
                    "optimiser_kernel": self.optimiser.kernel_label,
                    "graph_replayed_steps": self.step_graph.replays if self.step_graph is not None else 0,
                    "dtype": str(self.dtype).removeprefix("torch."),
                    "engine_version": __version__,
                    **software_facts(),
                    "spec_hash": state.spec.spec_hash(),
                    "data": dict(self.datasets[e].meta),
                    "batch_runs": len(self.specs),
                    "wall_time_s": wall,
                }
            )
        return self.states


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def default_recorders() -> list[Recorder]:
    """Losses and R always; the analyses module adds its recorders when it is installed."""
    recorders: list[Recorder] = [LossRecorder(), RegulariserRecorder()]
    with contextlib.suppress(ImportError):
        from gni_engine.analyses import analysis_recorders

        recorders.extend(analysis_recorders())
    return recorders


def train_batch(specs: Sequence[RunSpec], *, callbacks: BatchCallbacks | None = None) -> list[RunState]:
    """Train runs that share a batch key as one stacked model."""
    return BatchTrainer(specs, callbacks=callbacks).run()


def train_run(spec: RunSpec, *, callbacks: BatchCallbacks | None = None) -> RunState:
    """Train one run; a non-finite loss raises :class:`DivergenceError` naming the step."""
    state = train_batch([spec], callbacks=callbacks)[0]
    if state.status == "failed" and state.failed_step is not None:
        raise DivergenceError(state.error or "diverged", step=state.failed_step)
    return state


def forward_macs(spec: RunSpec, input_shape: Sequence[int], n_outputs: int) -> int:
    """Multiply-adds of one example's forward pass (matmuls and convolutions).

    >>> from gni_engine.spec import RunSpec
    >>> forward_macs(RunSpec.model_validate({"model": {"hidden": [4, 4]}}), (1,), 1)
    24
    """
    from gni_engine.spec import MLPSpec

    if isinstance(spec.model, MLPSpec):
        dims = [math.prod(input_shape), *spec.model.hidden, n_outputs]
        return sum(a * b for a, b in zip(dims[:-1], dims[1:], strict=True))
    channels, height, width = input_shape
    k, s = spec.model.kernel_size, spec.model.stride
    macs = 0
    for out_channels in spec.model.channels:  # each conv: output positions × (in channels × k × k)
        height, width = (height - k) // s + 1, (width - k) // s + 1
        macs += height * width * out_channels * channels * k * k
        channels = out_channels
    return macs + channels * height * width * n_outputs


def flops_per_step(spec: RunSpec, input_shape: Sequence[int], n_outputs: int, n_examples: int) -> float:
    """Approximate training FLOPs of one step (2 per multiply-add; backward ≈ 2× forward)."""
    macs = forward_macs(spec, input_shape, n_outputs)
    factor = 6.0
    if spec.training.mode == "explicit":
        factor = 12.0 * max(
            1, n_outputs if spec.training.regulariser == "exact" and spec.task != "regression" else 1
        )
    if spec.training.mode == "gni":
        factor *= spec.training.noise_samples
    return factor * macs * n_examples
