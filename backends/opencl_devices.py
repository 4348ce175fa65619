"""OpenCL devices for the OpenCL backend: finding them, choosing one, listing them, and what
a device allows a kernel launch (its limits).

A helper of ``ops_opencl.py``; the registry takes only ``ops_*.py`` files for backends.
pyopencl is imported on first use, never when this module is imported.

Device choice, never interactive: the ``device`` option or ``MICROCONV_OPENCL_DEVICE``
("P:D" platform and device index, "P", or a case-insensitive piece of the device or platform
name), else ``PYOPENCL_CTX`` (handed to pyopencl itself), else the first GPU on any platform,
else the first CPU device (PoCL), else whatever device exists.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from microconv.errors import BackendError

INSTALL_HELP = (
    "To get one: on Debian/Ubuntu install the CPU driver with `sudo apt-get install "
    "pocl-opencl-icd`; or `pip install \"pyopencl[pocl]\"` (keep the quotes) for PyPI's bundled "
    "PoCL; or install your GPU vendor's OpenCL driver (NVIDIA, AMD ROCm, Intel compute-runtime). "
    "Check what is visible with `clinfo -l`; `OCL_ICD_DEBUG=7 clinfo` shows why a driver is not "
    "loaded. Meanwhile `--backend numpy` runs the same model on the CPU without OpenCL."
)


def import_pyopencl():
    """The pyopencl module (with its memory pool), or a BackendError saying how to get it."""
    try:
        import pyopencl
        import pyopencl.tools  # noqa: F401 - the memory pool lives here
    except ImportError as exc:
        raise BackendError(f"pyopencl is not installed or cannot load libOpenCL ({exc}); "
                           "`pip install pyopencl`, then see docs/opencl.md. "
                           + INSTALL_HELP) from None
    return pyopencl


def find_devices(cl):
    """Every (platform index, device index, platform, device) on this machine, or a BackendError."""
    try:
        platforms = cl.get_platforms()
    except cl.Error:          # the ICD loader reports "no platform" as an error
        platforms = []
    if not platforms:
        raise BackendError("No OpenCL platform found: no OpenCL driver is installed or none "
                           "could be loaded. " + INSTALL_HELP)
    found = []
    for pi, platform in enumerate(platforms):
        try:
            devices = platform.get_devices()
        except cl.Error:      # a platform without devices raises DEVICE_NOT_FOUND
            devices = []
        found.extend((pi, di, platform, device) for di, device in enumerate(devices))
    if not found:
        names = ", ".join(p.name for p in platforms)
        raise BackendError(f"OpenCL platform(s) {names} found, but no device on any of them. "
                           + INSTALL_HELP)
    return found


def _listing_text(found):
    return "; ".join(f"{pi}:{di} {d.name.strip()} ({p.name.strip()})" for pi, di, p, d in found)


def _match_spec(spec, found):
    """The device a --device / MICROCONV_OPENCL_DEVICE value names: "P:D", "P" or a name piece."""
    spec = str(spec).strip()
    numbers = re.fullmatch(r"(\d+)(?::(\d+))?", spec)
    if numbers:
        pi, di = int(numbers.group(1)), int(numbers.group(2) or 0)
        for fpi, fdi, _, device in found:
            if (fpi, fdi) == (pi, di):
                return device
        raise BackendError(f"OpenCL device '{spec}' does not exist; the devices here are: "
                           f"{_listing_text(found)}")
    wanted = spec.lower()
    for _, _, _, device in found:
        if wanted in device.name.lower():
            return device
    for _, _, platform, device in found:
        if wanted in platform.name.lower():
            return device
    raise BackendError(f"no OpenCL device or platform name contains '{spec}'; the devices here "
                       f"are: {_listing_text(found)} (give 'P:D' or a piece of a name)")


def choose_device(cl, found, spec=None):
    """The device to use among ``found`` (from find_devices), by the rules in the docstring."""
    spec = spec if spec not in (None, "") else os.environ.get("MICROCONV_OPENCL_DEVICE") or None
    if spec is not None:
        return _match_spec(spec, found)
    if os.environ.get("PYOPENCL_CTX"):
        try:
            return cl.choose_devices(interactive=False)[0]
        except Exception as exc:  # noqa: BLE001 - pyopencl raises several kinds here
            raise BackendError(f"PYOPENCL_CTX={os.environ['PYOPENCL_CTX']!r} does not name an "
                               f"OpenCL device ({exc}); the devices here are: "
                               f"{_listing_text(found)}") from None
    for kind in (cl.device_type.GPU, cl.device_type.CPU):
        for _, _, _, device in found:
            if device.type & kind:
                return device
    return found[0][3]


def describe(device):
    """The device, its platform and its driver, in one line."""
    return (f"{device.name.strip()} on {device.platform.name.strip()}, "
            f"driver {device.driver_version.strip()}")


def _type_name(cl, device):
    kinds = [name for name in ("GPU", "CPU", "ACCELERATOR")
             if device.type & getattr(cl.device_type, name)]
    return "/".join(kinds) or "OTHER"


def device_report(device=None):
    """Every OpenCL device as a dict (index, platform, device, type, driver, chosen).

    ``chosen`` marks the device ``device`` (a --device value, or None for the default) picks.
    Raises BackendError when there is no platform or device (the message says how to get one).
    """
    cl = import_pyopencl()
    found = find_devices(cl)
    chosen = choose_device(cl, found, device)
    return [{"platform": platform.name.strip(), "device": dev.name.strip(),
             "index": f"{pi}:{di}", "type": _type_name(cl, dev),
             "driver": dev.driver_version.strip(), "chosen": dev == chosen}
            for pi, di, platform, dev in found]


def listing(device=None):
    """For ``microconv backends``: {"devices": device_report(device), "error": None}, or no
    devices and the reason in one line."""
    try:
        return {"devices": device_report(device), "error": None}
    except BackendError as exc:
        return {"devices": [], "error": " ".join(str(exc).split())}


def unavailable_reason():
    """None when an OpenCL device can be used, else one sentence saying why not."""
    try:
        import pyopencl as cl
    except ImportError:
        return "pyopencl is not installed (pip install pyopencl; see docs/opencl.md)"
    try:
        find_devices(cl)
    except BackendError as exc:
        first = str(exc).split(". ")[0]
        return (f"{first[0].lower()}{first[1:]} (install a driver, e.g. Debian's "
                "pocl-opencl-icd, check with clinfo; see docs/opencl.md, or use --backend numpy)")
    return None


@dataclass(frozen=True)
class DeviceLimits:
    """What a kernel launch may ask of a device. ``of(device)`` reads them from the device;
    ``create(limits=...)`` caps them, to run as a smaller device would (tests do this)."""

    max_work_group_size: int
    max_work_item_sizes: tuple        # the most work-items per group along each dimension
    local_mem_size: int               # bytes of __local memory one work-group may use
    fp64: bool                        # cl_khr_fp64 reported: float64 kernels build and run

    @classmethod
    def of(cls, device):
        return cls(int(device.max_work_group_size),
                   tuple(int(n) for n in device.max_work_item_sizes[:3]),
                   int(device.local_mem_size), "cl_khr_fp64" in device.extensions.split())

    def capped(self, cap):
        """These limits, none above ``cap``'s (a DeviceLimits, or None for no cap)."""
        if cap is None:
            return self
        return DeviceLimits(min(self.max_work_group_size, cap.max_work_group_size),
                            tuple(map(min, self.max_work_item_sizes, cap.max_work_item_sizes)),
                            min(self.local_mem_size, cap.local_mem_size),
                            self.fp64 and cap.fp64)


def language_options(device):
    """Build options that hold the kernels to OpenCL C 1.2, which every conforming OpenCL 1.2
    and later device compiles: a kernel that slips into a newer dialect then fails on PoCL and
    Oclgrind in the tests, not first on someone's GPU. Nothing for an older device."""
    version = re.match(r"OpenCL C (\d+)\.(\d+)", device.opencl_c_version.strip())
    if version and (int(version.group(1)), int(version.group(2))) >= (1, 2):
        return ["-cl-std=CL1.2"]
    return []
