// The build's baseline, checked before any of waveflow's own code runs. The
// Swift code is compiled for x86-64-v3 (AVX2, FMA, BMI1/2, F16C, LZCNT,
// MOVBE) unless WAVEFLOW_MARCH says otherwise (Package.swift, which sets
// WF_REQUIRE_X86_64_LEVEL to 3 or 4); on a CPU without those it would stop at
// some instruction with SIGILL, far from any explanation. This file is
// compiled for the plain x86-64 baseline, and its constructor runs before
// main (and before the library's code when WaveFlow is linked into another
// program; shared libraries' constructors, built for plain x86-64, run
// earlier): on such a CPU it says what to do and exits.
#include "ckernels.h"

#if defined(__x86_64__)
#include <cpuid.h>

/// Whether the CPU (and the OS, for the registers' state) has every feature
/// of x86-64-v3 (level 3) or of x86-64-v4 (level 4: AVX-512 F, BW, CD, DQ, VL).
int wf_cpu_has_x86_64_level(int level) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    const unsigned leaf1 = (1u << 12) | (1u << 22) | (1u << 27) | (1u << 28) | (1u << 29); // FMA MOVBE OSXSAVE AVX F16C
    if ((c & leaf1) != leaf1) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0)); // OSXSAVE checked above
    if ((lo & 6) != 6) return 0; // the OS keeps XMM and YMM state
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    const unsigned leaf7 = (1u << 3) | (1u << 5) | (1u << 8); // BMI1 AVX2 BMI2
    if ((b & leaf7) != leaf7) return 0;
    if (level >= 4) {
        const unsigned avx512 = (1u << 16) | (1u << 17) | (1u << 28) | (1u << 30) | (1u << 31); // F DQ CD BW VL
        if ((b & avx512) != avx512 || (lo & 0xE0) != 0xE0) return 0; // and opmask, ZMM state
    }
    if (!__get_cpuid(0x80000001, &a, &b, &c, &d)) return 0;
    return (c >> 5) & 1; // LZCNT
}
#else
int wf_cpu_has_x86_64_level(int level) { (void)level; return 0; }
#endif

#if defined(__x86_64__) && defined(WF_REQUIRE_X86_64_LEVEL)
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define WF_STR2(x) #x
#define WF_STR(x) WF_STR2(x)

__attribute__((constructor(101))) static void wf_check_baseline(void) {
    // WAVEFLOW_TEST_CPU_BASELINE=old takes this path on any CPU (the tests' way in).
    const char *pretend = getenv("WAVEFLOW_TEST_CPU_BASELINE");
    if (wf_cpu_has_x86_64_level(WF_REQUIRE_X86_64_LEVEL) && !(pretend && strcmp(pretend, "old") == 0)) return;
    static const char message[] =
        "waveflow: error: this CPU lacks AVX2, FMA or another x86-64-v" WF_STR(WF_REQUIRE_X86_64_LEVEL)
        " feature this build needs; build one for it: WAVEFLOW_MARCH=x86-64-v2 swift build -c release"
        " --scratch-path .build-v2 (README, \"Other CPUs\")\n";
    ssize_t written = write(2, message, sizeof message - 1);
    (void)written;
    _exit(69);
}
#endif

int wf_build_required_x86_64_level(void) {
#if defined(__x86_64__) && defined(WF_REQUIRE_X86_64_LEVEL)
    return WF_REQUIRE_X86_64_LEVEL;
#else
    return 0;
#endif
}
