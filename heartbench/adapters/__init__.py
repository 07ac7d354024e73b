"""The adapter registry, and the public surface for methods written outside heartbench.

Importing this package imports every built-in method module (one line each below), which
registers it. A method of your own (a plugin: docs/your-method.md) needs only the names in
``__all__``, which are the stable interface: they keep their meaning across releases.

* :func:`register` -- class decorator, ``@register("my_method")``;
* :class:`Method`, :class:`MethodConfig` -- the interface and its config dataclass base
  (``require`` raises the one-line error a config's ``validate`` reports);
* :class:`QKVMethod`, :class:`Delta`, :func:`wrap_linear`, :class:`AdaptedLinear`,
  :func:`unwrap_linear`, :func:`qkv_slice`, :func:`parse_targets` -- updates of slices of a
  frozen Linear, e.g. one :class:`Delta` per q/k/v slice of every attention site;
* :class:`LowRankDelta`, :class:`LoRAConfig` -- LoRA's delta and config, to build on;
* :class:`Backbone`, :class:`AttentionSite` -- what ``attach`` receives;
* :func:`create_method`, :func:`get_method_class`, :func:`save_adapter`,
  :func:`load_adapter`, :class:`NotMergeable`, :data:`METHODS` -- using methods by name.
"""

from heartbench.adapters import (  # noqa: F401
    adapter,
    adaptformer,
    bilora,
    bitfit,
    compacter,
    fact,
    fourierft,
    full,
    heart,
    linear,
    lora,
    mora,
    ssf,
    vpt,
)
from heartbench.adapters.base import (
    METHODS,
    AdaptedLinear,
    Delta,
    Method,
    MethodConfig,
    NotMergeable,
    QKVMethod,
    create_method,
    get_method_class,
    load_adapter,
    parse_targets,
    qkv_slice,
    register,
    require,
    save_adapter,
    unwrap_linear,
    wrap_linear,
)
from heartbench.adapters.lora import LoRAConfig, LowRankDelta
from heartbench.backbones import AttentionSite, Backbone

__all__ = [
    "METHODS",
    "AdaptedLinear",
    "AttentionSite",
    "Backbone",
    "Delta",
    "LoRAConfig",
    "LowRankDelta",
    "Method",
    "MethodConfig",
    "NotMergeable",
    "QKVMethod",
    "create_method",
    "get_method_class",
    "load_adapter",
    "parse_targets",
    "qkv_slice",
    "register",
    "require",
    "save_adapter",
    "unwrap_linear",
    "wrap_linear",
]
