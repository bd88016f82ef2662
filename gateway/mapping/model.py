"""Schema of the tag-mapping file: which PLC tags are which machine's counters.

The mapping file is written by controls engineers; this schema is its reference.
Unknown keys are refused (a typo must never silently disable a counter). Loading with
file:line error messages is in ``gateway.mapping.load``; this module only declares shapes
and the checks that need nothing but the file itself (a Modbus tag that runs past the
last address, a string without a length); what needs the whole file — a tag of the
other protocol than its source, overlapping registers — is ``load``'s.

A source speaks exactly one protocol, OPC UA or Modbus TCP, and a tag is written the
way its protocol addresses values: ``{node: …}`` for OPC UA, ``{register: …, type: …}``
for Modbus. Which of the two a tag is follows from its keys (see ``_tag_kind``), so a
typo in a Modbus tag is reported against the Modbus keys, not as a missing ``node``.
"""

from __future__ import annotations

import re
import warnings
from typing import Annotated, Any, Literal, Union

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, SecretStr, Tag, model_validator

# Names in the mapping are the master data's ids (work centers, operations, orders) or
# follow the same rules (sources, machines): text, even when written as a bare number.
from gateway.inputfile.messages import HIDDEN, WRONG_SHAPE
from gateway.masterdata.model import Id
from gateway.outputs.erpnext import ErpNextConfig
from gateway.outputs.odoo import OdooConfig
from gateway.outputs.sap_odata import SapODataConfig

CounterType = Literal["uint16", "uint32", "uint64"]
COUNTER_WIDTH_BITS = {"uint16": 16, "uint32": 32, "uint64": 64}

# Modbus: registers are 16 bits; these types span this many consecutive registers
# (the source decodes all of them; a counter is one of the unsigned ones).
MODBUS_TYPE_REGISTERS = {
    "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "int64": 4, "uint64": 4, "float32": 2, "float64": 4,
}
# An order number is text packed two characters per register, or a whole number.
ModbusOrderType = Literal["string", "int16", "uint16", "int32", "uint32", "int64", "uint64"]
RegisterTable = Literal["holding", "input"]
# big: most significant first. word_order orders the registers of a multi-register
# value, byte_order the two bytes inside each register (see the README's example).
Endianness = Literal["big", "little"]
LAST_ADDRESS = 65_535
# One Modbus read request carries at most 125 registers (the PDU limit, spec 6.3).
MAX_REGISTERS_PER_READ = 125

Register = Annotated[int, Field(ge=0, le=LAST_ADDRESS)]
UnitsPerCycle = Annotated[int, Field(ge=1, le=100_000)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _opc_tcp(url: str) -> str:
    if not url.startswith("opc.tcp://"):
        raise ValueError(f"must start with opc.tcp://, got '{url}'")
    return url


# The policies asyncua implements (asyncua.crypto.security_policies.SecurityPolicy<name>;
# a test keeps the two lists equal). Basic128Rsa15 and Basic256 are deprecated by the
# OPC Foundation and offered only for old servers.
SecurityPolicyName = Literal[
    "None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss", "Basic256", "Basic128Rsa15",
]
SecurityModeName = Literal["None", "Sign", "SignAndEncrypt"]


class Security(_Strict):
    """How the secure channel to an OPC UA server is protected."""

    policy: SecurityPolicyName
    mode: SecurityModeName

    @model_validator(mode="after")
    def _both_or_neither(self) -> Security:
        if (self.policy == "None") != (self.mode == "None"):
            raise ValueError(f"policy {self.policy} with mode {self.mode}: policy None goes with mode None only, "
                             "and a policy other than None needs mode Sign or SignAndEncrypt")
        return self

    @property
    def secured(self) -> bool:
        return self.mode != "None"


def _security_string_refused(value: Any) -> Any:
    """The asyncua security string of earlier versions is refused, with its new form."""
    if not isinstance(value, str):
        return value
    parts = [p.strip() for p in value.split(",")]
    new = f"security: {{policy: {parts[0] or '…'}, mode: {parts[1] if len(parts) > 1 else '…'}}}"
    if len(parts) >= 4:
        new += f", certificate: {parts[2]}, private_key: {parts[3]}"
    if len(parts) >= 5:
        new += f", server_certificate: {parts[4]}"
    raise ValueError(f"the security string is no longer read; write {new} "
                     "(certificate and private_key are optional: the gateway makes its own in the PKI folder)")


def is_thumbprint(text: str) -> bool:
    """A SHA-256 (64 hex digits) or SHA-1 (40) certificate thumbprint; colons and spaces allowed."""
    digits = re.sub(r"[\s:]", "", text)
    return len(digits) in (40, 64) and re.fullmatch(r"[0-9A-Fa-f]+", digits) is not None


class OpcUaSource(_Strict):
    endpoint: Annotated[str, AfterValidator(_opc_tcp)]
    publishing_interval_ms: Annotated[int, Field(ge=10, le=60_000)] = 100
    # Seconds without a keep-alive or data before the connection is presumed dead.
    watchdog_s: Annotated[float, Field(gt=0, le=600)] = 5.0
    reconnect_min_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    username: str | None = None
    # SecretStr: never in a repr, a log line or an error message (`.get_secret_value()`).
    password: SecretStr | None = None
    # The password is this file's content (a trailing newline dropped), the path relative
    # to the mapping file; `gateway.mapping.load` reads it into `password`.
    password_file: Annotated[str | None, HIDDEN] = None
    # null or {policy: None, mode: None}: no security. Otherwise the server's certificate
    # must be in the PKI's trusted/certs (or pinned by server_certificate).
    security: Annotated[Security | None, BeforeValidator(_security_string_refused)] = None
    # This source's own certificate and key instead of the PKI's own/ (relative to the mapping).
    certificate: Annotated[str, Field(min_length=1)] | None = None
    private_key: Annotated[str, Field(min_length=1)] | None = None
    # A pin instead of the trust list: a certificate file, or its SHA-256 (or SHA-1) thumbprint.
    server_certificate: Annotated[str, Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _pair(self) -> OpcUaSource:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("give both `certificate` and `private_key`, or neither (then the gateway uses "
                             "its own certificate from the PKI folder)")
        return self

    @property
    def secured(self) -> bool:
        return self.security is not None and self.security.secured


class ModbusSource(_Strict):
    host: Annotated[str, Field(min_length=1)]
    port: Annotated[int, Field(ge=1, le=65_535)] = 502
    unit: Annotated[int, Field(ge=0, le=255)] = 1  # unit id (slave id) of the device behind host:port
    poll_interval_ms: Annotated[int, Field(ge=10, le=60_000)] = 250
    # No answer to a request within this → the connection is rebuilt (a late answer
    # on the old one could be taken for the next request's).
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 2.0
    reconnect_min_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    reconnect_max_s: Annotated[float, Field(gt=0, le=600)] = 30.0
    # Tags at most this many unused registers apart are read in one request: reading a
    # few registers nobody asked for is cheaper than another round trip.
    max_gap_registers: Annotated[int, Field(ge=0, le=MAX_REGISTERS_PER_READ - 1)] = 8
    # Some devices answer fewer than the protocol's 125 registers per request.
    max_registers_per_read: Annotated[int, Field(ge=1, le=MAX_REGISTERS_PER_READ)] = MAX_REGISTERS_PER_READ


class SourceConfig(_Strict):
    opcua: OpcUaSource | None = None
    modbus: ModbusSource | None = None

    @model_validator(mode="after")
    def _one_protocol(self) -> SourceConfig:
        if (self.opcua is None) == (self.modbus is None):
            raise ValueError("give exactly one of `opcua:` or `modbus:`")
        return self

    @property
    def protocol(self) -> Literal["opcua", "modbus"]:
        return "opcua" if self.opcua is not None else "modbus"


class CounterTag(_Strict):
    """A counter on an OPC UA source."""

    node: Annotated[str, Field(min_length=1)]
    type: CounterType = "uint32"
    # Overrides the machine's units_per_cycle for this counter.
    units_per_cycle: UnitsPerCycle | None = None
    # A decrease is taken for a rollover only if the wrapped delta is at most this.
    rollover_window: Annotated[int, Field(ge=1)] | None = None


class OrderTag(_Strict):
    """The order-number tag on an OPC UA source."""

    node: Annotated[str, Field(min_length=1)]


# State gating: the machine's state tag and the values in which it produces.
StateValues = Annotated[list[int], Field(min_length=1, alias="in")]


class StateTag(_Strict):
    """``count_when`` on an OPC UA source: count only while this node's value is one of ``in``."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
    node: Annotated[str, Field(min_length=1)]
    states: StateValues


def _span_check(tag: ModbusCounterTag | ModbusOrderTag | ModbusStateTag) -> None:
    last = tag.register + tag.registers - 1
    if last > LAST_ADDRESS:
        raise ValueError(
            f"registers {tag.register}..{last} run past the last Modbus address {LAST_ADDRESS} "
            f"({tag.type} takes {tag.registers} register{'s' if tag.registers > 1 else ''})"
        )


# A field named `register` shadows the metaclass's ABCMeta.register: pydantic warns, and
# would take that method for the field's default unless the field says it has none
# (`= Field()`). Instances never see metaclass methods, so `tag.register` is the field.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message='Field name "register"', category=UserWarning)

    class ModbusCounterTag(_Strict):
        """A counter on a Modbus source: an unsigned integer in 1, 2 or 4 registers."""

        register: Register = Field()  # 0-based, as on the wire: holding register "40101" is 100
        table: RegisterTable = "holding"
        # Required: the width decides how many registers are read and where the counter
        # rolls over, and nothing on the wire says it.
        type: CounterType
        word_order: Endianness = "big"
        byte_order: Endianness = "big"
        units_per_cycle: UnitsPerCycle | None = None
        rollover_window: Annotated[int, Field(ge=1)] | None = None

        @property
        def registers(self) -> int:
            return MODBUS_TYPE_REGISTERS[self.type]

        @model_validator(mode="after")
        def _fits(self) -> ModbusCounterTag:
            _span_check(self)
            return self

    class ModbusOrderTag(_Strict):
        """The order-number tag on a Modbus source: text in ``length`` registers, or a number."""

        register: Register = Field()
        table: RegisterTable = "holding"
        type: ModbusOrderType = "string"
        length: Annotated[int, Field(ge=1, le=MAX_REGISTERS_PER_READ)] | None = None  # registers, strings only
        word_order: Endianness = "big"
        byte_order: Endianness = "big"

        @property
        def registers(self) -> int:
            return (self.length or 0) if self.type == "string" else MODBUS_TYPE_REGISTERS[self.type]

        @model_validator(mode="after")
        def _fits(self) -> ModbusOrderTag:
            if self.type == "string" and self.length is None:
                raise ValueError("a string needs `length`: how many registers it spans (2 characters each)")
            if self.type != "string" and self.length is not None:
                raise ValueError(f"`length` is for strings only; {self.type} always takes {self.registers} register(s)")
            if self.type == "string" and "word_order" in self.model_fields_set:
                raise ValueError(
                    "word_order does not apply to a string: its registers are read in address order "
                    "(byte_order says which character of a register comes first)"
                )
            _span_check(self)
            return self


    class ModbusStateTag(_Strict):
        """``count_when`` on a Modbus source: a whole number in 1, 2 or 4 registers."""

        model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
        register: Register = Field()
        table: RegisterTable = "holding"
        type: Literal["int16", "uint16", "int32", "uint32"] = "uint16"
        word_order: Endianness = "big"
        byte_order: Endianness = "big"
        states: StateValues

        @property
        def registers(self) -> int:
            return MODBUS_TYPE_REGISTERS[self.type]

        @model_validator(mode="after")
        def _fits(self) -> ModbusStateTag:
            _span_check(self)
            return self


# A tag with any of these keys is a Modbus tag; otherwise an OPC UA one. Deciding by the
# keys written (not by trying both) keeps the messages about the shape that was meant.
_MODBUS_KEYS = frozenset({"register", "table", "length", "word_order", "byte_order"})


def _which_tag(value: Any, opcua: type[BaseModel], modbus: type[BaseModel]) -> str:
    if isinstance(value, BaseModel):
        return type(value).__name__
    if isinstance(value, dict) and _MODBUS_KEYS & value.keys():
        return modbus.__name__
    return opcua.__name__


def _tag_kind(opcua: type[BaseModel], modbus: type[BaseModel]) -> Any:
    return Discriminator(lambda value: _which_tag(value, opcua, modbus))


AnyCounterTag = Annotated[
    Union[Annotated[CounterTag, Tag("CounterTag")], Annotated[ModbusCounterTag, Tag("ModbusCounterTag")]],
    _tag_kind(CounterTag, ModbusCounterTag),
]
AnyStateTag = Annotated[
    Union[Annotated[StateTag, Tag("StateTag")], Annotated[ModbusStateTag, Tag("ModbusStateTag")]],
    _tag_kind(StateTag, ModbusStateTag),
]
AnyOrderTag = Annotated[
    Union[Annotated[OrderTag, Tag("OrderTag")], Annotated[ModbusOrderTag, Tag("ModbusOrderTag")]],
    _tag_kind(OrderTag, ModbusOrderTag),
]


def _order_kind(value: Any) -> str | None:
    """Which way ``Machine.order`` is written: a PLC tag (a mapping), or a fixed order number
    (text; an unquoted number is a name too). None: neither, said as ``wrong_shape``.

    Deciding by the shape written (not by trying every branch) keeps the messages about
    the branch that was meant; another way to write it is one more line here and one more
    member of ``MachineOrder``."""
    if isinstance(value, (dict, BaseModel)):
        return _which_tag(value, OrderTag, ModbusOrderTag)
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return "fixed"
    return None


MachineOrder = Annotated[
    Union[
        Annotated[OrderTag, Tag("OrderTag")],
        Annotated[ModbusOrderTag, Tag("ModbusOrderTag")],
        Annotated[Id, Tag("fixed")],
    ],
    Discriminator(_order_kind, custom_error_type=WRONG_SHAPE, custom_error_message="expected a mapping or text",
                  custom_error_context={"expected": "a mapping or text"}),
]


class ConfirmRule(_Strict):
    every_units: Annotated[int, Field(ge=1)] | None = 100
    every_seconds: Annotated[float, Field(gt=0)] | None = 60.0
    # Each machine's timer runs every_seconds plus its own fixed share of this, so machines
    # started together do not all confirm in the same second. null: 10 % of every_seconds.
    jitter_seconds: Annotated[float, Field(ge=0)] | None = None

    @property
    def effective_jitter_seconds(self) -> float:
        if self.jitter_seconds is not None:
            return self.jitter_seconds
        return 0.1 * self.every_seconds if self.every_seconds is not None else 0.0


class Plausibility(_Strict):
    # A bigger jump in one reading is held as an anomaly, not posted: a counter that jumps
    # by billions is a PLC fault, not production. 100 000 covers a fast machine's output
    # over a gateway outage of hours; set it per machine, or null to switch the check off.
    max_units_per_reading: Annotated[int, Field(ge=1)] | None = 100_000


class Counters(_Strict):
    """A machine's counters: ``good`` (yield) and ``scrap``, or ``total`` and ``scrap``.

    ``total`` is a counter of every part made, good and bad (PackML ``ProdProcessedCount``
    in most PLCs): yield is then total − scrap, so scrap is not counted twice. A template's
    ``total`` is dropped with ``total: ~`` when a machine writes ``good:`` instead.
    """

    good: AnyCounterTag | None = None
    # Before scrap: a PLC updates both in one scan, and the total read first keeps the
    # yield of what is pending from going below zero.
    total: AnyCounterTag | None = None
    scrap: AnyCounterTag | None = None

    @model_validator(mode="after")
    def _good_or_total(self) -> Counters:
        if self.good is not None and self.total is not None:
            raise ValueError("give `good` (the yield) or `total` (every part, good and bad), not both")
        if self.good is None and self.total is None:
            raise ValueError("missing `good` (the yield), or `total` (every part, good and bad) with `scrap`")
        if self.total is not None and self.scrap is None:
            raise ValueError("`total` needs `scrap`: yield is total − scrap (a total without scrap is `good`)")
        return self

    @property
    def made(self) -> CounterTag | ModbusCounterTag:
        """The counter of the parts made: ``good``, or ``total``."""
        return self.good if self.good is not None else self.total


REPETITIVE = "none"  # `order: none`: no orders, cost collectors per product, line and period


class Machine(_Strict):
    source: Id
    work_center: Id
    operation: Id = "0010"
    units_per_cycle: Annotated[int, Field(ge=1, le=100_000)] = 1
    counters: Counters
    # Either a PLC tag that holds the running order number, or a fixed order number.
    # Order numbers like 1000123 are often written unquoted; they are still names (Id).
    # `none`: repetitive production, no orders (with `product:`).
    order: MachineOrder
    confirm: ConfirmRule = ConfirmRule()
    plausibility: Plausibility = Plausibility()
    # Count only while the machine produces: units counted in other states are held as
    # anomalies (not posted, not lost) for a person to accept or reject.
    count_when: AnyStateTag | None = None
    # reset: the PLC restarts the counters at 0 at every job (order) change — EUROMAP 77,
    # PackML Count. The first value after an order change then counts from 0: a job reset,
    # not a PLC reset. continue: the counters go on across orders (the default).
    job_counters: Literal["continue", "reset"] = "continue"
    # The serial of the unit just made, written by the PLC every cycle (an OPC UA node, or a
    # Modbus string / number like the order tag): each good unit is received under its
    # serial. A good unit with no new serial, or one used before, is held as an anomaly.
    serial: AnyOrderTag | None = None
    # Repetitive production (`order: none`): the product the machine makes. Its units are
    # confirmed on the cost collector of the product, its production `version` (default: the
    # product's only one), the `line` (default: the machine's work center; machines of one line
    # share the line's collector) and the posting period (master data `periods:`).
    product: Id | None = None
    version: Id | None = None
    line: Id | None = None

    @model_validator(mode="after")
    def _repetitive_or_orders(self) -> Machine:
        if self.order == REPETITIVE and self.product is None:
            raise ValueError("`order: none` is repetitive production without orders: name the product the machine "
                             "makes (`product: MATERIAL`)")
        if self.product is not None and self.order != REPETITIVE:
            raise ValueError("`product:` is for repetitive production without orders: write `order: none` with it, "
                             "or leave `product:` out and give the order")
        extra = [k for k in ("version", "line") if getattr(self, k) is not None]
        if self.product is None and extra:
            raise ValueError(f"{' and '.join(f'`{k}:`' for k in extra)} go{'es' if len(extra) == 1 else ''} with "
                             "`product:` (repetitive production, `order: none`)")
        return self

    @property
    def repetitive(self) -> bool:
        """Confirms on cost collectors (``order: none`` with ``product:``), not on orders."""
        return self.product is not None

    @property
    def collector_line(self) -> str:
        """The line a repetitive machine's collector is kept for."""
        return self.line or self.work_center

    @model_validator(mode="after")
    def _one_serial_per_unit(self) -> Machine:
        if self.serial is not None and (self.units_per_cycle != 1 or self.counters.good.units_per_cycle not in
                                        (None, 1)):
            raise ValueError("a serial tag names one unit per cycle: units_per_cycle must be 1 on a machine "
                             "with a serial tag")
        return self


# -- outputs (gateway.outputs): where confirmations and goods movements are delivered ------------




def _http_url(url: str) -> str:
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://, got '{url}'")
    return url


def _mqtt_url(url: str) -> str:
    if not url.startswith(("mqtt://", "mqtts://")):
        raise ValueError(f"must start with mqtt:// or mqtts://, got '{url}'")
    return url


class WebhookOutput(_Strict):
    url: Annotated[str, AfterValidator(_http_url)]
    # HMAC-SHA256 key of the X-Signature header: write "${NAME}" to take it from the environment.
    secret: SecretStr | None = None
    timeout_s: Annotated[float, Field(gt=0, le=300)] = 10.0
    headers: dict[str, str] = {}
    # Deliveries per request: 1 posts each delivery's body alone; more posts the batch body (an array
    # of deliveries, each answered on its own; docs/outputs.md) to a receiver that accepts it.
    batch: Annotated[int, Field(ge=1, le=5000)] = 1


class MqttOutput(_Strict):
    # mqtt://[user@]host[:1883] or mqtts://[user@]host[:8883]
    url: Annotated[str, AfterValidator(_mqtt_url)]
    password: SecretStr | None = None  # "${NAME}": from the environment
    # Unified namespace: <site>/<area>/<line>/<machine>/…; the line is the machine's source.
    site: Id = "site"
    area: Id = "area"
    client_id: str | None = None  # default: backflush-<output name>-<host>-<pid> (unique per process)
    ca_file: str | None = None  # mqtts: a CA bundle other than the system's
    keepalive_s: Annotated[int, Field(ge=5, le=3600)] = 30


class Output(_Strict):
    # Exactly one kind. The ERP kinds' settings live with their adapters (gateway/outputs/<kind>.py).
    webhook: WebhookOutput | None = None
    mqtt: MqttOutput | None = None
    erpnext: ErpNextConfig | None = None
    odoo: OdooConfig | None = None
    sap_odata: SapODataConfig | None = None
    # Which machines' documents go here (default all); `lines` names sources (a line's machines).
    machines: list[Id] | None = None
    lines: list[Id] | None = None
    max_attempts: Annotated[int, Field(ge=1, le=10_000)] = 20  # then parked with the target's message
    retry_min_s: Annotated[float, Field(gt=0, le=600)] = 1.0
    retry_max_s: Annotated[float, Field(gt=0, le=3600)] = 60.0

    @model_validator(mode="after")
    def _one_kind(self) -> Output:
        kinds = [k for k in OUTPUT_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"an output is exactly one of {', '.join(OUTPUT_KINDS)}; got "
                             f"{', '.join(kinds) if kinds else 'none'}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in OUTPUT_KINDS if getattr(self, k) is not None)

    @property
    def settings(self) -> Any:
        return getattr(self, self.kind)


OUTPUT_KINDS = ("webhook", "mqtt", "erpnext", "odoo", "sap_odata")


class Mapping(_Strict):
    # Optional master-data file (relative to the mapping) used by `gateway validate`
    # to check references to work centers, materials and orders.
    masterdata: str | None = None
    sources: dict[Id, SourceConfig]
    machines: dict[Id, Machine]
    # The OPC UA certificate folder (own/, trusted/, rejected/, …), relative to the mapping;
    # default: `pki` next to the mapping file. Loading makes it (and every certificate path
    # of the sources) relative to the working directory, see gateway.mapping.load.
    pki: Annotated[str, Field(min_length=1)] | None = None
    # What the gateway calls itself to OPC UA servers: in its certificate and its sessions.
    # Default: urn:<host name>:backflush-gateway.
    application_uri: Annotated[str, Field(min_length=1)] | None = None
    # Where confirmations and goods movements are delivered (docs/outputs.md), by name.
    outputs: dict[Id, Output] = {}

    @model_validator(mode="after")
    def _output_routes(self) -> Mapping:
        for name, out in self.outputs.items():
            for m in out.machines or []:
                if m not in self.machines:
                    raise ValueError(f"outputs.{name}.machines: no machine {m!r} in `machines`")
            for line in out.lines or []:
                if line not in self.sources:
                    raise ValueError(f"outputs.{name}.lines: no source {line!r} in `sources`")
        return self

    def output_machines(self, name: str) -> list[str] | None:
        """The machines an output is routed to; None: every machine (and documents of none)."""
        out = self.outputs[name]
        if out.machines is None and out.lines is None:
            return None
        chosen = set(out.machines or []) | {m for m, cfg in self.machines.items() if cfg.source in (out.lines or [])}
        return sorted(chosen)
