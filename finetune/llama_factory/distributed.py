"""Multi-GPU / multi-node training through LLaMA-Factory's own launcher variables.

LLaMA-Factory starts torchrun itself when ``FORCE_TORCHRUN=1`` (or when it sees several GPUs) and
reads ``NNODES``, ``NODE_RANK``, ``NPROC_PER_NODE``, ``MASTER_ADDR``, ``MASTER_PORT``. People get
these wrong by hand; this module builds them from flags, checks them all at once, and writes
DeepSpeed configs (the ones LLaMA-Factory ships in examples/deepspeed) into the run folder.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from finetune import fileio

DEEPSPEED_CHOICES = ("z2", "z3", "z2-offload", "z3-offload")


@dataclass(frozen=True)
class DistSpec:
    nproc_per_node: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    deepspeed: str | None = None

    @property
    def distributed(self) -> bool:
        return self.nproc_per_node > 1 or self.nnodes > 1

    def problems(self) -> list[str]:
        """Every problem at once (torchtune style), each with the flag that fixes it."""
        out = []
        if self.nproc_per_node < 1:
            out.append(f"--nproc-per-node must be >= 1 (got {self.nproc_per_node})")
        if self.nnodes < 1:
            out.append(f"--nnodes must be >= 1 (got {self.nnodes})")
        if not 0 <= self.node_rank < max(self.nnodes, 1):
            out.append(f"--node-rank {self.node_rank} is outside 0..{self.nnodes - 1} for --nnodes {self.nnodes}")
        if not 1024 <= self.master_port <= 65535:
            out.append(f"--master-port {self.master_port} must be in 1024..65535")
        if self.nnodes > 1 and _is_loopback(self.master_addr):
            out.append(f"--master-addr {self.master_addr} is a loopback address, but --nnodes {self.nnodes} "
                       "needs the address of node 0 that every node can reach (e.g. --master-addr 10.0.0.1)")
        if self.deepspeed and self.deepspeed not in DEEPSPEED_CHOICES:
            out.append(f"--deepspeed {self.deepspeed!r} is not one of {', '.join(DEEPSPEED_CHOICES)}")
        return out

    def env(self) -> dict[str, str]:
        """The variables LLaMA-Factory's CLI reads; empty for a single process."""
        if not self.distributed:
            return {}
        return {
            "FORCE_TORCHRUN": "1",
            "NNODES": str(self.nnodes),
            "NODE_RANK": str(self.node_rank),
            "NPROC_PER_NODE": str(self.nproc_per_node),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }

    def node_commands(self, train_cmd: str = "invoke train --model M --template T --dataset D") -> list[str]:
        """The exact command for each node (the guide prints the same)."""
        return [
            f"{train_cmd} --nproc-per-node {self.nproc_per_node} --nnodes {self.nnodes} --node-rank {rank} "
            f"--master-addr {self.master_addr} --master-port {self.master_port}"
            + (f" --deepspeed {self.deepspeed}" if self.deepspeed else "")
            for rank in range(self.nnodes)
        ]


def _is_loopback(addr: str) -> bool:
    if addr == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False  # a host name: trust the user


def deepspeed_config(kind: str) -> dict:
    """LLaMA-Factory's examples/deepspeed/ds_z{2,3}[_offload]_config.json."""
    if kind not in DEEPSPEED_CHOICES:
        raise ValueError(f"unknown DeepSpeed config {kind!r}; choose one of {', '.join(DEEPSPEED_CHOICES)}")
    stage = 3 if kind.startswith("z3") else 2
    cfg: dict = {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "fp16": {"enabled": "auto", "loss_scale": 0, "loss_scale_window": 1000, "initial_scale_power": 16,
                 "hysteresis": 2, "min_loss_scale": 1},
        "bf16": {"enabled": "auto"},
    }
    if stage == 2:
        zero = {"stage": 2, "allgather_partitions": True, "allgather_bucket_size": 5e8, "overlap_comm": False,
                "reduce_scatter": True, "reduce_bucket_size": 5e8, "contiguous_gradients": True,
                "round_robin_gradients": True}
    else:
        zero = {"stage": 3, "overlap_comm": False, "contiguous_gradients": True, "sub_group_size": 1e9,
                "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto", "stage3_max_live_parameters": 1e9,
                "stage3_max_reuse_distance": 1e9, "stage3_gather_16bit_weights_on_model_save": True}
    if kind.endswith("offload"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    cfg["zero_optimization"] = zero
    return cfg


def deepspeed_config_path(run_dir: Path, kind: str) -> Path:
    """Where ``kind``'s config goes in the run folder (``ds_z2.json`` ...): the run stays self-contained."""
    return Path(run_dir) / f"ds_{kind.replace('-', '_')}.json"


def write_deepspeed_config(run_dir: Path, kind: str) -> Path:
    """Write ``ds_<kind>.json`` into the run folder."""
    path = deepspeed_config_path(run_dir, kind)
    fileio.atomic_write_text(path, fileio.dumps_json(deepspeed_config(kind), indent=2) + "\n")
    return path
