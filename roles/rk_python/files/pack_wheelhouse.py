"""Pack a wheelhouse directory into one tar on the controller, so it crosses SSH as one file.

Usage: python pack_wheelhouse.py WHEELHOUSE CACHE_DIR  (prints the tar's path)

The tar is named by the directory's listing (names, sizes, mtimes) and written once, with
fixed metadata, so repeated runs and parallel hosts reuse the same file.
"""
import hashlib
import os
import sys
import tarfile
import tempfile

source, cache = sys.argv[1], os.path.expanduser(sys.argv[2])
names = sorted(n for n in os.listdir(source) if os.path.isfile(os.path.join(source, n)))
digest = hashlib.sha256()
for name in names:
    st = os.stat(os.path.join(source, name))
    digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
target = os.path.join(cache, f"wheelhouse-{digest.hexdigest()[:16]}.tar")
if not os.path.exists(target):
    os.makedirs(cache, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=cache, suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, tarfile.open(fileobj=out, mode="w") as tar:
            for name in names:
                info = tar.gettarinfo(os.path.join(source, name), arcname=name)
                info.mtime, info.mode = 0, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(os.path.join(source, name), "rb") as wheel:
                    tar.addfile(info, wheel)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
print(target)
