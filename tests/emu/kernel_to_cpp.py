#!/usr/bin/env python3
"""Rewrites one kernels/*.cu (or .cuh) file into C++ the CPU emulator (cuda_emu.hpp) compiles:
<<<grid, block, smem, stream>>> launches become emu::launch(...) calls and every
`extern __shared__ T name[];` becomes a pointer into the emulated dynamic shared memory.
Usage: kernel_to_cpp.py IN OUT"""
import re
import sys

src = open(sys.argv[1]).read()
src = src.replace('#include <cuda_runtime.h>', '')
src = re.sub(r'extern\s+__shared__\s+(\w+)\s+(\w+)\[\];', r'\1* \2 = emu::dyn_smem<\1>();', src)
# clang-format may break a launch after the kernel's name or inside <<< >>>.
src = re.sub(r'([A-Za-z_][A-Za-z0-9_]*(?:<[^<>]*>)?)\s*<<<(.*?)>>>\s*\(', r'emu::launch(\2, \1, ', src,
             flags=re.S)
if '<<<' in src or 'extern __shared__' in src:
    sys.exit(f'{sys.argv[1]}: a launch or shared declaration the rewrite does not handle')
open(sys.argv[2], 'w').write(src)
