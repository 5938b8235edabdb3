"""Surviving faults in every training stage: pre-emption (SIGTERM) and checkpoints cut or damaged on disk.

Why one module of Trainer callbacks: pretraining (transformers' `Trainer`), PPO (hfllm's, on `Trainer`)
and TRL's SFT/reward/DPO trainers all take `callbacks=` and save through `Trainer._save_checkpoint`,
so one pair of callbacks and one resume rule serve them all:

- `CheckpointChecksums` records the size and SHA-256 of every file of a checkpoint *inside its
  trainer_state.json*. The Trainer writes that file last, after the weights, optimizer and RNG
  states, and asks its stateful callbacks for their state just before; a checkpoint is then
  committed by one file, so a kill at any point of the save leaves either a checkpoint whose
  every file is accounted for, or one without a readable trainer_state.json (cut mid-save). A
  separate checksum file would open a window between the two files in which a kill goes unseen.
- `resume_checkpoint` picks the newest checkpoint that passes `checkpoint_problem` (the files
  recorded are there, as long and with the same SHA-256; weights are safetensors whose headers
  match their sizes), sets aside newer ones with one line each, and so resumes from the previous
  complete checkpoint when the newest was truncated or corrupted on disk.
- `SaveOnPreemption` implements TrainingArguments' `enable_jit_checkpoint` (transformers' name for
  "save a checkpoint on SIGTERM") so that it holds under several processes and in a pipeline: all
  processes agree to stop at the end of the same optimizer step (a one-int all-reduce per step),
  save there if the save fits in `jit_checkpoint_grace_period`, and exit with status 143 rather
  than return from `train()` — a stage that returned would save its final model and manifest as if
  it had finished, and the pipeline would skip it on the next run. transformers' own handler is
  replaced while training runs (each process would save at whichever hook it reached).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, sort_checkpoints

from hfllm.errors import ConfigError

TRAINER_STATE = "trainer_state.json"
PREEMPTED_EXIT_STATUS = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM
DEFAULT_GRACE_PERIOD_S = 30.0  # Kubernetes' default terminationGracePeriodSeconds; torchrun's too
_CHUNK = 8 << 20


@dataclass
class PreemptionArguments:
    """Mixed into a stage's `TrainingArguments` subclass: saving on SIGTERM on by default, and the
    grace period the orchestrator leaves before its SIGKILL. (TRL's own configs have
    `enable_jit_checkpoint`, off by default, and the grace period defaults to 30 s.)"""

    # Neither changes what a run computes: hfllm.pipeline leaves both out of an entry's fingerprint.
    enable_jit_checkpoint: bool = field(
        default=True,
        metadata={"help": "On SIGTERM (pre-emption), every process stops at the end of the same optimizer step, "
                          "saves a checkpoint and exits with status 143; the same command resumes from it."},
    )
    jit_checkpoint_grace_period: float = field(
        default=DEFAULT_GRACE_PERIOD_S,
        metadata={"help": "Seconds between SIGTERM and the orchestrator's SIGKILL (Slurm --signal=TERM@N, "
                          "Kubernetes terminationGracePeriodSeconds; torchrun itself waits 30 s). A save that would "
                          "not fit is not started: the last complete checkpoint stands."},
    )


class Preempted(SystemExit):
    """Raised on every process once the pre-emption checkpoint is written (or could not fit)."""

    def __init__(self, message: str):
        super().__init__(PREEMPTED_EXIT_STATUS)
        self.message = message


# ------------------------------------------------------------------------------------ checksums


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)  # hashlib releases the GIL on large updates: files hash in parallel
    return digest.hexdigest()


def _hash_files(root: Path, names: list[str]) -> dict[str, str]:
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return dict(zip(names, pool.map(lambda n: file_sha256(root / n), names)))


def _is_other_process_rng(name: str, process_index: int) -> bool:
    """`rng_state_<k>.pth` of another process: written concurrently with the main process's save,
    so it cannot be recorded from there (a missing one only costs that process its RNG state)."""
    stem = Path(name).name
    return stem.startswith("rng_state_") and stem != f"rng_state_{process_index}.pth"


def record_files(checkpoint: Path, process_index: int = 0) -> dict[str, dict[str, Any]]:
    """{relative path: {bytes, sha256}} of the checkpoint's files, trainer_state.json aside."""
    names = sorted(str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*") if p.is_file())
    names = [n for n in names if n != TRAINER_STATE and not _is_other_process_rng(n, process_index)]
    hashes = _hash_files(checkpoint, names)
    return {n: {"bytes": (checkpoint / n).stat().st_size, "sha256": hashes[n]} for n in names}


class CheckpointChecksums(TrainerCallback, ExportableState):
    """Puts the size and SHA-256 of every file of a checkpoint into its trainer_state.json.

    The Trainer calls `state()` of its stateful callbacks right before it writes trainer_state.json
    (the last file of a save), so the record lands in the file that commits the checkpoint. `state()`
    is also called when the Trainer builds its state at the start of training; it records nothing then.
    """

    def __init__(self):
        self._args = None
        self._state = None

    def _remember(self, args, state) -> None:
        self._args, self._state = args, state

    def on_train_begin(self, args, state, control, **kwargs):
        self._remember(args, state)
        # A checkpoint written without this callback has no entry, and the Trainer's save would miss it.
        state.stateful_callbacks.setdefault(type(self).__name__, {"args": {}, "attributes": {"files": {}}})

    def on_step_end(self, args, state, control, **kwargs):
        self._remember(args, state)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._remember(args, state)

    def state(self) -> dict[str, Any]:
        files: dict[str, Any] = {}
        if self._args is not None and self._args.should_save:
            folder = Path(self._args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self._state.global_step}"
            if folder.is_dir():
                files = record_files(folder, self._args.process_index)
        return {"args": {}, "attributes": {"files": files}}


def recorded_files(trainer_state: dict[str, Any]) -> dict[str, dict[str, Any]] | None:
    entry = trainer_state.get("stateful_callbacks", {}).get(CheckpointChecksums.__name__)
    if isinstance(entry, list):  # several instances: the Trainer keeps a list
        entry = entry[-1] if entry else None
    files = (entry or {}).get("attributes", {}).get("files")
    return files or None


# ------------------------------------------------------------------------------ checking a checkpoint


def safetensors_problem(path: Path) -> str | None:
    """Whether a safetensors file is whole: its header parses and its tensors end where the file does."""
    size = path.stat().st_size
    if size == 0:
        return f"{path.name} is empty (0 bytes)"
    try:
        with path.open("rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                raise ValueError
            header = json.loads(f.read(header_len))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError):
        return f"{path.name} is not a whole safetensors file (unreadable header)"
    if size != 8 + header_len + end:
        return f"{path.name} is {size:,} bytes, its header says {8 + header_len + end:,}"
    return None


def _engine_weights(checkpoint: Path) -> bool:
    """Weights in the format a sharding engine resumes from, written by this run: FSDP's sharded state
    (torch.distributed.checkpoint, `pytorch_model_fsdp_0/.metadata`) or DeepSpeed's `global_step*/`."""
    return any(checkpoint.glob("pytorch_model_fsdp_*/.metadata")) or any(checkpoint.glob("global_step*/*"))


def _weights_problem(checkpoint: Path) -> str | None:
    """Safetensors weights present (pickle refused), every shard an index names is there."""
    weights = sorted(checkpoint.glob("*.safetensors"))
    if not weights and not _engine_weights(checkpoint):
        pickles = [p.name for p in checkpoint.glob("*.bin") if p.name != "training_args.bin"]
        return (f"only pickle weights ({', '.join(pickles)}), hfllm resumes from safetensors only" if pickles
                else "no safetensors weights")
    for index in checkpoint.rglob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError):
            return f"{index.relative_to(checkpoint)} is unreadable"
        missing = sorted(s for s in shards if not (index.parent / s).is_file())
        if missing:
            return f"shard {missing[0]} named by {index.name} is missing"
    return None


def checkpoint_problem(checkpoint: str | Path, verify_hashes: bool = True) -> str | None:
    """Why a Trainer checkpoint cannot be resumed from, or None. Recorded files are checked for
    presence and size, then (with `verify_hashes`) SHA-256; safetensors files for whole headers."""
    checkpoint = Path(checkpoint)
    try:
        state = json.loads((checkpoint / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return f"no readable {TRAINER_STATE} (the save was cut)"
    if not isinstance(state, dict):
        return f"{TRAINER_STATE} is not a Trainer state"
    if problem := _weights_problem(checkpoint):
        return problem
    recorded = recorded_files(state) or {}
    for name, entry in recorded.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != entry["bytes"]:
            return f"{name} is {path.stat().st_size:,} bytes, {entry['bytes']:,} when saved"
    for path in sorted(checkpoint.rglob("*.safetensors")):
        if problem := safetensors_problem(path):
            return problem
    if verify_hashes and recorded:
        names = sorted(recorded)
        for name, digest in _hash_files(checkpoint, names).items():
            if digest != recorded[name]["sha256"]:
                return f"{name} changed since it was saved (SHA-256 differs)"
    return None


def checkpoint_step(path: str | Path) -> int:
    """The global step in a Trainer checkpoint's name (`checkpoint-N`)."""
    return int(Path(path).name.rsplit("-", 1)[-1])


def _say(message: str) -> None:
    print(f"hfllm: {message}", file=sys.stderr, flush=True)


def last_complete_checkpoint(output_dir: str | Path, set_aside_partial: bool = True) -> Path | None:
    """Newest checkpoint that `checkpoint_problem` accepts. Newer ones are refused with one line each
    and moved to `incomplete-checkpoint-N` — unless `set_aside_partial` is False: the processes other
    than the main one only read (after it), and skip the hash check it already made."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    for path in map(Path, reversed(sort_checkpoints(str(output_dir)))):
        problem = checkpoint_problem(path, verify_hashes=set_aside_partial)
        if problem is None:
            return path
        if not set_aside_partial:
            continue
        aside = output_dir / f"incomplete-checkpoint-{checkpoint_step(path)}"
        shutil.rmtree(aside, ignore_errors=True)
        path.rename(aside)
        _say(f"{path}: refused, {problem}; set aside as {aside.name}")
    return None


def resume_checkpoint(output_dir: str | Path, resume_from_checkpoint: str | bool | None = None) -> Path | None:
    """The checkpoint a training stage resumes from: the one `resume_from_checkpoint` names (refused
    if damaged), else the newest complete one in `output_dir`. Under several processes the main one
    checks and sets aside first; the others then read what it left."""
    from accelerate import PartialState

    state = PartialState()
    if resume_from_checkpoint and resume_from_checkpoint is not True:
        path = Path(resume_from_checkpoint)
        if problem := checkpoint_problem(path, verify_hashes=state.is_main_process):
            raise ConfigError(f"cannot resume from {path}: {problem}", field="resume_from_checkpoint")
        return path
    with state.main_process_first():
        if state.is_main_process:
            Path(output_dir).mkdir(parents=True, exist_ok=True)
        return last_complete_checkpoint(output_dir, set_aside_partial=state.is_main_process)


# ------------------------------------------------------------------------------------ pre-emption


def _all_processes_max(values: list[float], group) -> list[float]:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=group)
    return tensor.tolist()


class SaveOnPreemption(TrainerCallback):
    """`enable_jit_checkpoint` for every stage: SIGTERM → checkpoint at the end of the optimizer step
    all processes agree on → exit 143. Needs the Trainer in the main thread (signal handlers)."""

    def __init__(self):
        self.signalled_at: float | None = None  # time.monotonic() of the first SIGTERM
        self.preempted = False
        self.last_save_s: float | None = None
        self._save_started: float | None = None
        self._previous_handler: Any = None
        self._active = False
        self._group = None

    # -- the signal
    def _on_sigterm(self, signum, frame) -> None:
        if not self._active:  # training is over (or failed before on_train_end): behave as before
            signal.signal(signal.SIGTERM, self._previous_handler or signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        if self.signalled_at is None:
            self.signalled_at = time.monotonic()

    def _restore_handler(self) -> None:
        if self._active:
            signal.signal(signal.SIGTERM, self._previous_handler or signal.SIG_DFL)
            self._active = False

    def on_train_begin(self, args, state, control, **kwargs):
        if not args.enable_jit_checkpoint or threading.current_thread() is not threading.main_thread():
            return
        previous = signal.getsignal(signal.SIGTERM)
        manager = getattr(previous, "__self__", None)
        if type(manager).__name__ == "CheckpointManager":  # transformers' own JIT handler: take its place
            previous = manager._original_sigterm_handler
        self._previous_handler = previous
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._active = True
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_backend() != "gloo":
            self._group = dist.new_group(backend="gloo")  # agree on CPU: no device sync per step

    def on_train_end(self, args, state, control, **kwargs):
        self._restore_handler()

    # -- deciding, at the end of each optimizer step, on every process alike
    def on_step_end(self, args, state, control, **kwargs):
        if not args.enable_jit_checkpoint:
            return
        if control.should_save:
            self._save_started = time.monotonic()
        waited = time.monotonic() - self.signalled_at if self.signalled_at is not None else -1.0
        signalled, waited, last_save = _all_processes_max(
            [float(self.signalled_at is not None), waited, self.last_save_s or 0.0], self._group)
        if not signalled:
            return
        grace = float(getattr(args, "jit_checkpoint_grace_period", DEFAULT_GRACE_PERIOD_S))
        control.should_training_stop = True
        control.should_evaluate = False
        if waited + last_save > grace:
            control.should_save = False
            self._exit(args, state, f"SIGTERM {waited:.0f} s ago, and a save takes {last_save:.0f} s of the "
                                    f"{grace:.0f} s grace period: no checkpoint written; the last complete one stands")
        control.should_save = True
        self.preempted = True
        self._save_started = time.monotonic()

    def on_evaluate(self, args, state, control, **kwargs):
        if self._save_started is not None:
            self._save_started = time.monotonic()  # time the save alone

    def on_save(self, args, state, control, **kwargs):
        if self._save_started is not None:
            self.last_save_s = time.monotonic() - self._save_started
            self._save_started = None
        if self.preempted:
            self._exit(args, state, f"SIGTERM: saved {PREFIX_CHECKPOINT_DIR}-{state.global_step} (step "
                                    f"{state.global_step} of {state.max_steps}) in {self.last_save_s:.1f} s; "
                                    "the same command resumes from it")

    def _exit(self, args, state, message: str) -> None:
        from accelerate import PartialState

        PartialState().wait_for_everyone()  # no process leaves while another still writes the checkpoint
        self._restore_handler()
        if args.process_index == 0:
            _say(message)
        raise Preempted(message)


def fault_tolerance_callbacks() -> list[TrainerCallback]:
    """What every training stage adds to its Trainer's callbacks (after the user's)."""
    return [CheckpointChecksums(), SaveOnPreemption()]
