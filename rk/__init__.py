"""rk: run Jupyter kernels on remote servers over SSH, driven by Ansible."""

__version__ = "0.1.0"
