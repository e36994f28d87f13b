"""TEST-ONLY environment fix for the SGLang tier: torchvision's PyPI wheel carries CUDA-built
extensions that cannot load beside the CPU torch. SGLang imports torchvision only for image
preprocessing of multimodal models; the text-only tier needs it importable, nothing more.
Removes the extension files and makes the fake-op registrations that need them conditional.

    python patch_torchvision.py   (run with the tier's interpreter)
"""

import importlib.util
import os
import re

GUARD = """
def _spec_tracing_guard(name):  # test-tier patch: these ops do not exist without _C
    def register(fn):
        try:
            return torch.library.register_fake(name)(fn)
        except RuntimeError:
            return fn

    return register


"""

root = os.path.dirname(importlib.util.find_spec("torchvision").origin)
for name in os.listdir(root):
    if name.endswith(".so") and name.startswith(("_C", "image")):
        os.remove(os.path.join(root, name))
meta = os.path.join(root, "_meta_registrations.py")
text = open(meta).read()
if "_spec_tracing_guard" not in text:
    text = re.sub(
        r'@torch\.library\.register_fake\("torchvision::(\w+)"\)',
        r'@_spec_tracing_guard("torchvision::\1")',
        text,
    )
    first = text.index("@_spec_tracing_guard")
    text = text[:first] + GUARD.lstrip("\n") + text[first:]
    with open(meta, "w") as f:
        f.write(text)
print("torchvision patched for CPU-only import")
