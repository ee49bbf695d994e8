"""Print an arm64 /proc/cpuinfo for the core qemu-user emulates (run inside the board's tree, under QEMU_CPU).

qemu-user 7.2 passes the host's x86 /proc/cpuinfo through, and LiteRT's cpuinfo library
crashes on it: ``slimlab board up`` bind-mounts this script's output over the tree's
/proc/cpuinfo instead. Features come from the emulated AT_HWCAP/AT_HWCAP2 (qemu fakes
/proc/self/auxv); implementer, part, variant and revision from ``mrs x0, midr_el1``, run in
a child (qemu lets EL0 read the ID registers), with a table of Arm part numbers if it fails.

usage: python3 cpuinfo.py [NCPU]
"""

import ctypes
import mmap
import os
import struct
import sys

HWCAP = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop "
         "sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2 = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm svef64mm svebf16 "
          "i8mm bf16 dgh rng bti mte ecv afp rpres mte3 sme smei16i64 smef64f64 smei8i32 smef16f32 smeb16f32 "
          "smef32f32 smefa64 wfxt ebf16 sveebf16 cssc rprfm sve2p1 sme2 sme2p1 smei16i32 smebi32i32 smeb16b16 "
          "smef16f16 mops hbc").split()
AT_HWCAP, AT_HWCAP2 = 16, 26
PARTS = {"cortex-a35": 0xd04, "cortex-a53": 0xd03, "cortex-a55": 0xd05, "cortex-a57": 0xd07, "cortex-a72": 0xd08,
         "cortex-a76": 0xd0b, "neoverse-n1": 0xd0c, "neoverse-v1": 0xd40, "cortex-a710": 0xd47}


def auxv() -> dict:
    data, found = open("/proc/self/auxv", "rb").read(), {}
    for offset in range(0, len(data) - 15, 16):
        key, value = struct.unpack_from("<QQ", data, offset)
        if key == 0:
            break
        found[key] = value
    return found


def run_words(words: list) -> int | None:
    """Execute instruction words (ending in ret) in a child; x0, or None if a signal killed it."""
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        try:
            page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            page.write(struct.pack(f"<{len(words)}I", *words))
            value = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(page)))()
            os.write(write, struct.pack("<Q", value))
        finally:
            os._exit(0)
    os.close(write)
    got = os.read(read, 8)
    os.close(read)
    os.wait()
    return struct.unpack("<Q", got)[0] if len(got) == 8 else None


def main() -> None:
    cpu = os.environ.get("QEMU_CPU", "max")
    found = auxv()
    hwcap, hwcap2 = found.get(AT_HWCAP, 0), found.get(AT_HWCAP2, 0)
    features = [n for i, n in enumerate(HWCAP) if hwcap >> i & 1] + [n for i, n in enumerate(HWCAP2) if hwcap2 >> i & 1]
    midr = run_words([0xD5380000, 0xD65F03C0]) or (0x41 << 24 | 0xF << 16 | PARTS.get(cpu.split(",")[0], 0xd08) << 4)
    for n in range(int(sys.argv[1]) if len(sys.argv) > 1 else len(os.sched_getaffinity(0))):
        print(f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {' '.join(features)}\n"
              f"CPU implementer\t: 0x{midr >> 24 & 0xff:02x}\nCPU architecture: 8\n"
              f"CPU variant\t: 0x{midr >> 20 & 0xf:x}\nCPU part\t: 0x{midr >> 4 & 0xfff:03x}\n"
              f"CPU revision\t: {midr & 0xf}\n")


main()
