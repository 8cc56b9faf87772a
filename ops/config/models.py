"""The shape of configs/ops/project.json: pydantic models, every one closed (extra="forbid").

The JSON Schema in schemas/project.schema.json is generated from these models
(`python -m ops.config.schema`); a test fails when the committed file drifts.
"""

from __future__ import annotations

import ast
import functools
import inspect
import math
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from ops.config.settings import DEFAULT_PYTHON, remote_outputs_default
from runner.contract import DEFAULT_REQUIRED
from runner.logpump import compile_metric_pattern

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
OVERRIDE_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]*$"
KNOWN_PRESET_KINDS = ("command", "monai_seg", "sweep", "eval", "service")
# what a monai_seg preset runs: the built-in trainer, with its params as --key=value
TRAINER_COMMAND = ("{python}", "-m", "runner.seg.train", "--data_dir={data_dir}")

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)]
OverrideKey = Annotated[str, StringConstraints(pattern=OVERRIDE_KEY_PATTERN)]
OverrideValue = str | int | float | bool


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (it cannot reach an argv or a path)")
    return value


def _usable_override(value: OverrideValue) -> OverrideValue:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number (JSON's 1e400 reads as infinity)")
    return _no_nul(value) if isinstance(value, str) else value


# text that reaches an argv, an environment or a path on the host
ArgText = Annotated[str, AfterValidator(_no_nul)]
# what project.json may hold as an override: finite numbers, no NUL in text
ConfigOverrideValue = Annotated[OverrideValue, AfterValidator(_usable_override)]

# Every number in project.json has a sane range, so a value that validates can also be
# converted and multiplied where it is used (1e308 MiB would overflow into bytes).
MAX_MEMORY_MB = float(1 << 30)  # 1 PiB
MAX_DURATION_SEC = 366 * 86400.0  # a year
MAX_WAIT_SEC = 3600.0  # grace periods, connect retries


def _bounded(default: float | None, *, gt: float | None = None, ge: float | None = None,
             le: float) -> Any:
    """A float field with a range and no inf/nan (JSON's 1e400 parses as inf)."""
    return Field(default, gt=gt, ge=ge, le=le, allow_inf_nan=False)

# The override forms ops documents, and what each is for (docs/reference/config.md).
OVERRIDE_FORMS: dict[str, str] = {
    "--{key}={value}": "upstream nanoGPT configurator (--key=value)",
    "{key}={value}": "nanoGPT forks and Hydra (key=value)",
    "--{key} {value}": "argparse (--key value, two argv items)",
}


# dicts whose keys have a pattern: the schema must reject other keys too, not just allow these
_KEYS_ONLY: dict[str, Any] = {"json_schema_extra": {"additionalProperties": False}}


# Importing these models must be cheap: most `ops` commands load a cached, already validated
# config (ops.config.cache) and never validate. So the validators are built on first use
# (defer_build), and the attribute docstrings, which only the JSON Schema needs, are read
# when a schema is asked for (pydantic's use_attribute_docstrings reads the source at import).
_CONFIG = ConfigDict(extra="forbid", defer_build=True)


class _Closed(BaseModel):
    model_config = _CONFIG

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The JSON Schema, with each field's attribute docstring as its description."""
        attach_field_docstrings()
        return super().model_json_schema(*args, **kwargs)


class ProjectSection(_Closed):
    name: Name
    """Project name: part of every outputs root and of W&B defaults."""
    remote_outputs_dir: ArgText | None = None
    """Root of run directories on a remote host that sets no outputs_dir of its own; default
    /mnt/runs/<name>. Never used for host `local`."""
    local_outputs_dir: ArgText = Field("runs", min_length=1)
    """Where host `local` keeps run directories: <repo>/<this>/<name>, whoever runs ops (an
    absolute path replaces <repo>/<this>)."""
    default_host: str | None = None
    """Host used when a command gets no --host; none means `local`."""
    ops_home: str = "~/.pod-ops"
    """Where ops keeps its git mirror, worktrees and runner venv on a host."""

    def outputs_dir(self) -> str:
        """Root of the run directories on a remote host."""
        return remote_outputs_default(self.name, self.remote_outputs_dir)


class WandbSection(_Closed):
    mode: Literal["auto", "online", "offline", "disabled"] = "disabled"
    """W&B mode: auto, online, offline or disabled (no W&B at all)."""
    project: str | None = None
    """W&B project name."""
    entity: str | None = None
    """W&B entity (user or team)."""
    ensure_creds_script: str | None = None
    """Local command (run without a shell, relative to the repo root) whose stdout is the W&B
    API key; `ops pod up` uses it when the local netrc has no api.wandb.ai entry."""


class StorageSection(_Closed):
    artifacts_dir: str = "artifacts/runs"
    """Where `ops run fetch` puts run directories, relative to the repo root."""
    wandb: WandbSection = Field(default_factory=WandbSection)
    """Weights & Biases logging."""
    hf_home: str | None = None
    """Hugging Face cache on hosts (put it on the persistent volume); made by `ops pod up`,
    given to workloads as HF_HOME."""
    datasets_root: str | None = None
    """Dataset cache root on hosts; made by `ops pod up`, given to workloads as
    OPS_DATASETS_ROOT and HF_DATASETS_CACHE."""


class TmuxSection(_Closed):
    socket: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]+$")] = "ops"
    """tmux socket name (tmux -L) of the dedicated ops server."""
    watch_interval_sec: float = _bounded(5.0, ge=0.01, le=MAX_WAIT_SEC)
    """Seconds between heartbeats (0.01 to 3600)."""
    heartbeat_file: Literal["heartbeat.json"] = "heartbeat.json"
    """Heartbeat file name in the run directory (fixed by the contract)."""
    stall_after_intervals: int = Field(3, ge=2, le=1000)
    """A run whose heartbeat is this many intervals old is stalled (2 to 1000)."""


class ArtifactContract(_Closed):
    required: list[str] = Field(default_factory=lambda: list(DEFAULT_REQUIRED))
    """Files `ops validate` requires in every finished run directory."""


class SecretsSection(_Closed):
    env: list[EnvName] = Field(default_factory=list)
    """Environment variables forwarded from the submitter to the workload; values redacted."""
    files: list[str] = Field(default_factory=list)
    """Credential files on the host (e.g. ~/.netrc) whose values are redacted from logs."""


SlurmValue = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:,=+@/-]{0,127}$")]


class SlurmResources(_Closed):
    """sbatch resources; a preset's `resources` override its host's `slurm` values."""

    partition: SlurmValue | None = None
    """sbatch --partition."""
    account: SlurmValue | None = None
    """sbatch --account."""
    qos: SlurmValue | None = None
    """sbatch --qos."""
    time: SlurmValue | None = None
    """sbatch --time (e.g. 04:00:00): at the limit SLURM warns the wrapper, status timeout."""
    gpus: int | None = Field(None, ge=0, le=4096)
    """sbatch --gpus."""
    nodes: int | None = Field(None, ge=1, le=100000)
    """sbatch --nodes."""
    cpus_per_task: int | None = Field(None, ge=1, le=100000)
    """sbatch --cpus-per-task."""
    mem: SlurmValue | None = None
    """sbatch --mem (e.g. 64G)."""
    constraint: SlurmValue | None = None
    """sbatch --constraint."""


class SlurmSection(SlurmResources):
    """How a host with `"launcher": "slurm"` submits jobs."""

    extra: list[Annotated[str, StringConstraints(pattern=r"^--[A-Za-z][^\x00\n]*$")]] = \
        Field(default_factory=list)
    """More sbatch options, passed as they are (e.g. --constraint=a100)."""
    signal_before_s: int | None = Field(None, ge=1, le=65535)
    """SLURM sends TERM to the wrapper this many seconds before the time limit; default twice
    the preset's grace_sec plus 30."""


class Distributed(_Closed):
    nproc_per_node: int = Field(ge=1, le=64)
    """Processes on the node: the workload runs under `torchrun --standalone`."""


class HostConfig(_Closed):
    address: str = Field(min_length=1)
    """ssh alias from ~/.ssh/config, or user@host[:port]."""
    outputs_dir: ArgText | None = None
    """Outputs root on this host; default project.remote_outputs_dir, else /mnt/runs/<name>."""
    ops_home: str | None = None
    """ops home on this host; default project.ops_home."""
    python: str = DEFAULT_PYTHON
    """Interpreter that runs the runner there; ops makes <ops_home>/venv from it (seeing the
    system packages, so the pod's torch is reused) when psutil is missing."""
    connect_retry_sec: float = _bounded(60.0, ge=0, le=MAX_WAIT_SEC)
    """How long to keep retrying a connection that is refused or times out (a booting pod);
    at most 3600 s."""
    launcher: Literal["tmux", "slurm"] = "tmux"
    """What starts the wrapper: tmux on the host, or sbatch on a SLURM login node."""
    slurm: SlurmSection = Field(default_factory=SlurmSection)
    """sbatch options for `"launcher": "slurm"` (partition, account, time, gpus, ...)."""


class Limits(_Closed):
    rss_limit_mb: float | None = _bounded(None, gt=0, le=MAX_MEMORY_MB)
    """Abort the run when its resident memory exceeds this many MiB (at most 2^30, 1 PiB)."""
    gpu_mem_limit_mb: float | None = _bounded(None, gt=0, le=MAX_MEMORY_MB)
    """Abort the run when its GPU memory exceeds this many MiB (at most 2^30, 1 PiB)."""
    grace_sec: float = _bounded(10.0, ge=0, le=MAX_WAIT_SEC)
    """Seconds to wait after SIGINT, and again after SIGTERM, before the next signal (at most
    3600)."""
    timeout_sec: float | None = _bounded(None, gt=0, le=MAX_DURATION_SEC)
    """Stop the run (status timeout) after this many seconds (at most a year)."""
    no_progress_sec: float | None = _bounded(None, gt=0, le=MAX_DURATION_SEC)
    """Abort the run when its step has not advanced for this many seconds (at most a year)."""


class StdoutMetric(_Closed):
    pattern: str
    """Regex over stdout lines; named groups become metrics, (?P<step>...) the step."""

    @field_validator("pattern")
    @classmethod
    def _compiles_as_the_runner_compiles(cls, value: str) -> str:
        compile_metric_pattern(value)  # the runner's own compile: ValueError says why not
        return value


class DatasetRef(_Closed):
    name: str
    """Dataset name recorded in dataset_manifest.json."""
    dir: ArgText = Field(min_length=1)
    """Dataset directory on the host; {data_dir} in argv. An override named data_dir (e.g.
    `--set data_dir=...`) replaces it: the run records the directory the workload got."""


class CommandPreset(_Closed):
    kind: Literal["command"]
    """Preset kind."""
    description: str = ""
    """One line shown in listings."""
    command: list[ArgText] = Field(min_length=1)
    """argv of the workload; placeholders such as {run_dir} and {out_dir} are filled in."""
    config: ArgText | None = None
    """Config file passed as a positional argument after command."""
    overrides: dict[OverrideKey, ConfigOverrideValue] = Field(default_factory=dict,
                                                              **_KEYS_ONLY)
    """Values rendered with override_format after config; `--set key=value` changes them."""
    override_format: str = "--{key}={value}"
    """Template for one override: --{key}={value}, {key}={value} or --{key} {value}."""
    cwd: ArgText = "."
    """Working directory, relative to the code checkout."""
    env: dict[EnvName, ArgText] = Field(default_factory=dict, **_KEYS_ONLY)
    """Extra environment variables (not secrets: they are recorded)."""
    dataset: DatasetRef | None = None
    """Dataset described in dataset_manifest.json."""
    out_dir: ArgText = "{run_dir}/out"
    """Directory for the workload's own files; {out_dir} in argv."""
    metrics_from_stdout: list[StdoutMetric] = Field(default_factory=list)
    """Regexes that turn stdout lines into metrics.jsonl records."""
    summary_from: str | None = None
    """A JSON file the workload writes; its numbers are lifted into the metrics."""
    best: dict[str, Literal["min", "max"]] = Field(default_factory=dict)
    """Metrics to track the best value of, and whether lower or higher is better."""
    secrets_env: list[EnvName] = Field(default_factory=list)
    """More environment variables to forward for this preset (see secrets.env)."""
    secrets_files: list[str] = Field(default_factory=list)
    """More credential files to redact for this preset (see secrets.files)."""
    limits: Limits = Field(default_factory=Limits)
    """Watchdog limits."""
    python: bool | None = None
    """Whether the workload is Python; null means command[0] starts with python."""
    debug_overrides: dict[OverrideKey, ConfigOverrideValue] = Field(default_factory=dict,
                                                                    **_KEYS_ONLY)
    """Overrides that `ops run submit --debug` applies on top (a short run)."""
    resume_override: OverrideKey | None = None
    """Override that `--resume RUN_ID` sets to the parent run's directory, if the workload can
    resume; the parent run dir is also in $OPS_RESUME_FROM."""
    resources: SlurmResources = Field(default_factory=SlurmResources)
    """On a SLURM host: this preset's resources (gpus, time, ...) over the host's."""
    distributed: Distributed | None = None
    """Run the workload on several processes of one node through torchrun."""

    @field_validator("override_format")
    @classmethod
    def _format_fields(cls, value: str) -> str:
        # the runner substitutes the literal text {key} and {value} (runner.workload_command);
        # anything else in braces ({value!s}, {key:>4}, {{) would reach the argv as it is
        rest = value.replace("{key}", "", 1).replace("{value}", "", 1)
        if (value.count("{key}") != 1 or value.count("{value}") != 1 or "{" in rest
                or "}" in rest or "\x00" in value):
            raise ValueError(
                f"{value!r} is not an override template: it needs {{key}} and {{value}} once "
                "each and no other braces (no conversions such as !s, no format specs); "
                'documented forms: "--{key}={value}", "{key}={value}", "--{key} {value}"'
            )
        return value

    @field_validator("cwd")
    @classmethod
    def _relative_cwd(cls, value: str) -> str:
        path = PurePosixPath(value)
        if path.is_absolute() or value.startswith("~"):
            raise ValueError(f"must be relative to the checkout, got {value!r}")
        if ".." in path.parts:
            raise ValueError(f"must stay inside the checkout ('..' is not allowed), got {value!r}")
        return value

    def is_python(self) -> bool:
        """Whether the workload is a Python process (explicit, or command[0] is python* or
        the `{python}` placeholder): the runner's own rule, so both sides agree."""
        from runner.workload_command import is_python

        return is_python({"command": self.command, "python": self.python})

    def override_form(self) -> str:
        """A short description of how this preset renders its overrides."""
        return OVERRIDE_FORMS.get(self.override_format, f"custom template {self.override_format}")


    def settable(self) -> dict[str, OverrideValue]:
        """What `--set` may change, with values that give each key its type."""
        return dict(self.overrides)


class MonaiSegPreset(CommandPreset):
    """The built-in MONAI 3D segmentation trainer (runner.seg.train) under the full contract."""

    kind: Literal["monai_seg"]  # type: ignore[assignment]  # a narrower tag of the same field
    """Preset kind."""
    command: list[str] = Field(default_factory=lambda: list(TRAINER_COMMAND), min_length=1)
    """The trainer entry point; rarely changed."""
    dataset: DatasetRef
    """The NIfTI dataset (imagesTr/, labelsTr/) the trainer reads; {data_dir} in argv."""
    debug_overrides: dict[OverrideKey, ConfigOverrideValue] = Field(
        default_factory=lambda: {"debug": True}, **_KEYS_ONLY)
    """Overrides for `--debug`: by default the trainer's own debug mode (1 epoch, 2 folds)."""
    resume_override: OverrideKey | None = "resume_from"
    """The trainer continues the parent run's interrupted fold from its checkpoints."""

    def settable(self) -> dict[str, OverrideValue]:
        """Every trainer parameter, typed by the trainer's defaults, then the preset's values."""
        return {**trainer_defaults(), **self.overrides}


def trainer_defaults() -> dict[str, OverrideValue]:
    """The trainer's parameters and defaults (runner.seg.params is standard library only)."""
    import dataclasses

    from runner.seg.params import TrainParams

    defaults: dict[str, OverrideValue] = {}
    for item in dataclasses.fields(TrainParams):
        value = item.default if item.default is not dataclasses.MISSING else ""
        defaults[item.name] = value if isinstance(value, (str, int, float, bool)) else ""
    return defaults


class EvalPreset(CommandPreset):
    """A command that scores a parent run's checkpoint (`ops run submit -p NAME --from RUN`)
    and writes one record per item to {run_dir}/results.jsonl ($OPS_RESULTS_FILE)."""

    kind: Literal["eval"]  # type: ignore[assignment]  # a narrower tag of the same field
    """Preset kind."""
    checkpoint: ArgText = "checkpoints/ckpt_best.pt"
    """The checkpoint to read, relative to the parent run's directory: {checkpoint} in argv
    (also $OPS_CHECKPOINT); the parent run dir is {parent_run_dir}."""

    @field_validator("checkpoint")
    @classmethod
    def _inside_parent(cls, value: str) -> str:
        path = PurePosixPath(value)
        if not value or path.is_absolute() or value.startswith("~") or ".." in path.parts:
            raise ValueError(f"must be a path inside the parent run dir, got {value!r}")
        return value


class ServiceSection(_Closed):
    port: int = Field(ge=1, le=65535)
    """The port the server listens on, on the host; {port} in argv ($OPS_SERVICE_PORT)."""
    health: str = Field("/health", pattern=r"^/[\x21-\x7e]*$", max_length=512)
    """Path the wrapper GETs on 127.0.0.1:port; a 2xx answer means healthy."""
    ready_timeout_sec: float = _bounded(600.0, gt=0, le=MAX_DURATION_SEC)
    """A server not healthy this many seconds after its start is stopped: failed, not_ready."""
    probe_interval_sec: float = _bounded(5.0, gt=0, le=MAX_WAIT_SEC)
    """Seconds between two health probes."""
    probe_timeout_sec: float = _bounded(5.0, gt=0, le=MAX_WAIT_SEC)
    """A probe without an answer within this many seconds counts as failed."""


class ServicePreset(CommandPreset):
    """A long-running server: launched like any run, probed for health while it serves,
    reachable from the laptop with `ops run open RUN`, stopped with `ops run cancel`."""

    kind: Literal["service"]  # type: ignore[assignment]  # a narrower tag of the same field
    """Preset kind."""
    service: ServiceSection
    """Port, health path and how long the server may take to become healthy."""

    @model_validator(mode="after")
    def _no_step_watchdog(self) -> ServicePreset:
        if self.limits.no_progress_sec is not None:
            raise ValueError("limits.no_progress_sec cannot apply to a service (a server has no "
                             "steps); its health probe and service.ready_timeout_sec watch it")
        return self


class SweepPreset(_Closed):
    """Several presets run one after another as separate runs, grouped by a sweep id."""

    kind: Literal["sweep"]
    """Preset kind."""
    description: str = ""
    """One line shown in listings."""
    members: list[Name] = Field(min_length=1)
    """Names of the presets to run, in order; each becomes its own run."""
    parallel: bool = False
    """On a SLURM host: submit every member at once instead of each after the previous."""


Preset = Annotated[CommandPreset | MonaiSegPreset | EvalPreset | ServicePreset | SweepPreset,
                   Field(discriminator="kind")]
WorkloadPreset = CommandPreset  # what a run executes: command, monai_seg, eval, service presets


class ProjectConfig(_Closed):
    model_config = ConfigDict(**_CONFIG, populate_by_name=True)

    schema_: str | None = Field(None, alias="$schema", title="$schema")
    """JSON Schema reference for editors."""
    project: ProjectSection
    """The project."""
    storage: StorageSection = Field(default_factory=StorageSection)
    """Local artifacts and W&B."""
    tmux: TmuxSection = Field(default_factory=TmuxSection)
    """tmux server and heartbeat timing."""
    artifact_contract: ArtifactContract = Field(default_factory=ArtifactContract)
    """What a finished run directory must contain."""
    secrets: SecretsSection = Field(default_factory=SecretsSection)
    """Secrets forwarded to every preset."""
    hosts: dict[Name, HostConfig] = Field(default_factory=dict, **_KEYS_ONLY)
    """Static hosts by name; host `local` is built in."""
    presets: dict[Name, Preset] = Field(default_factory=dict, **_KEYS_ONLY)
    """Presets by name."""

    @model_validator(mode="after")
    def _sweep_members_exist(self) -> ProjectConfig:
        for name, preset in self.presets.items():
            if not isinstance(preset, SweepPreset):
                continue
            for member in preset.members:
                target = self.presets.get(member)
                if target is None:
                    raise ValueError(f"presets.{name}.members: unknown preset {member!r}")
                if isinstance(target, SweepPreset):
                    raise ValueError(f"presets.{name}.members: {member!r} is a sweep itself")
        return self


def as_json(value: Any) -> Any:
    """``model.model_dump(mode="json")`` for the models here, without pydantic's serializer.

    Models unpickled from the config cache were never validated in this process, so their
    first model_dump would build the serializer of the whole model (and import pydantic's
    plugin machinery): a tenth of a second of every submit. Every field of these models holds
    JSON-ready values once validated (text, numbers, booleans, None, lists, dicts, models),
    no field has a serialization alias or is excluded, so this walk gives the same document
    (tests/test_config.py compares the two for every preset kind)."""
    if isinstance(value, BaseModel):
        return {name: as_json(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {key: as_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [as_json(item) for item in value]
    return value


@functools.cache  # once per process
def attach_field_docstrings() -> None:
    """Give every field the docstring written under it as its description (what pydantic's
    use_attribute_docstrings does at class creation), once, and rebuild the models."""
    docs = _attribute_docstrings(ast.parse(Path(__file__).read_text(encoding="utf-8")))
    models = [value for value in globals().values() if isinstance(value, type)
              and issubclass(value, BaseModel) and value.__module__ == __name__]
    for model in models:  # in definition order: a model's parts come before it
        for name, info in model.model_fields.items():
            owner = next(c for c in model.__mro__ if name in inspect.get_annotations(c))
            text = docs.get(owner.__name__, {}).get(name)
            if info.description is None and text is not None:
                info.description = text
        model.model_rebuild(force=True)


def _attribute_docstrings(tree: ast.Module) -> dict[str, dict[str, str]]:
    """{class name: {field: docstring}}: a string statement right after an annotated name."""
    found: dict[str, dict[str, str]] = {}
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs = found.setdefault(node.name, {})
        for before, after in zip(node.body, node.body[1:], strict=False):
            if (isinstance(before, ast.AnnAssign) and isinstance(before.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                docs[before.target.id] = inspect.cleandoc(after.value.value)
    return found
