# Print the path of a pip wheel that the controller's Python carries (or nothing):
# the one bundled with ensurepip, else the one Debian ships in /usr/share/python-wheels.
import glob
import os

try:
    import ensurepip
    bundled = os.path.join(os.path.dirname(ensurepip.__file__), "_bundled")
except ImportError:
    bundled = ""
found = sorted(glob.glob(os.path.join(bundled, "pip-*.whl"))) if bundled else []
found = found or sorted(glob.glob("/usr/share/python-wheels/pip-*.whl"))
print(found[-1] if found else "")
