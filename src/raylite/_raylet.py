"""Where Ray's compiled core exports some public classes (`ray._raylet`): the names
programs import from there, re-exported. Owns nothing itself."""

from .object_ref import ObjectRef
from .object_ref_generator import DynamicObjectRefGenerator, ObjectRefGenerator

# Ray's older name of ObjectRefGenerator (its docs of Ray 2.6-2.7 import it from here).
StreamingObjectRefGenerator = ObjectRefGenerator

__all__ = [
    "DynamicObjectRefGenerator",
    "ObjectRef",
    "ObjectRefGenerator",
    "StreamingObjectRefGenerator",
]
