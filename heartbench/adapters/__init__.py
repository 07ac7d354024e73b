"""The adapter registry. One line per method module: importing it registers the method."""

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
from heartbench.adapters.base import (  # noqa: F401
    METHODS,
    Method,
    MethodConfig,
    NotMergeable,
    create_method,
    get_method_class,
    load_adapter,
    save_adapter,
)
