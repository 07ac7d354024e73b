"""The adapter registry. One line per method module: importing it registers the method."""

from heartbench.adapters import bilora, heart, lora  # noqa: F401
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
